// Render scheduling: every DOM write happens in an animation frame, and busy side panels at a capped rate.

// Each frame costs the whole page a style, layout, paint and commit pass (several ms at 500 tiles), so
// a panel that changes often (alerts, analyzer loads) is drawn at most once per `minGapMs`.
export function frameScheduler(render, minGapMs = 0) {
  let frame = 0;
  let timer = 0;
  let last = -Infinity;
  const run = () => {
    frame = 0;
    last = performance.now();
    render();
  };
  return function schedule({ now: immediate = false } = {}) {
    if (frame) return;
    const wait = immediate ? 0 : last + minGapMs - performance.now();
    if (wait <= 0) {
      clearTimeout(timer);
      timer = 0;
      frame = requestAnimationFrame(run);
    } else if (!timer) {
      timer = setTimeout(() => {
        timer = 0;
        if (!frame) frame = requestAnimationFrame(run);
      }, wait);
    }
  };
}
