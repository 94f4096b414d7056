// Render scheduling: every DOM write happens in an animation frame, and busy side panels at a capped rate.

// Each frame costs the whole page a style, layout, paint and commit pass (several ms at 500 tiles), so
// a panel that changes often (alerts, analyzer loads) is drawn at most once per `minGapMs`. A panel waiting out
// its gap also rides on the next frame another scheduler draws once half its gap has passed: the page then draws
// about one frame per digest, not one per panel at phases of their own. A change that is not urgent waits for
// such a frame even when its gap has passed, at most RIDE_WAIT_MS: a panel whose changes come about once per
// gap (the analyzer loads, once a second) would otherwise take a frame of its own every time.
const riders = new Set();
const RIDE_WAIT_MS = 400; // longer than the orchestrator's digest tick (0.25 s): a digest's frame comes first

export function frameScheduler(render, minGapMs = 0) {
  let frame = 0;
  let timer = 0;
  let last = -Infinity;
  const run = () => {
    frame = 0;
    clearTimeout(timer);
    timer = 0;
    riders.delete(ride);
    last = performance.now();
    render();
  };
  const ride = (now) => {
    if (!frame && now - last >= minGapMs / 2) run();
  };
  const onFrame = () => {
    run();
    const now = performance.now();
    for (const waiting of [...riders]) waiting(now);
  };
  return function schedule({ now: immediate = false } = {}) {
    if (frame) return;
    const wait = immediate ? 0 : Math.max(last + minGapMs - performance.now(), RIDE_WAIT_MS);
    if (wait <= 0) {
      clearTimeout(timer);
      timer = 0;
      riders.delete(ride);
      frame = requestAnimationFrame(onFrame);
    } else if (!timer) {
      riders.add(ride);
      timer = setTimeout(() => {
        timer = 0;
        if (!frame) frame = requestAnimationFrame(onFrame);
      }, wait);
    }
  };
}

/** Whether a node is displayed, read from the hidden attributes of it and its ancestors (the page hides views that
 * way): unlike offsetParent, asking does not force a layout in the middle of a frame's writes. */
export function isShown(node) {
  return node.isConnected && node.closest("[hidden]") === null;
}
