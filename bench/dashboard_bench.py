"""Dashboard benchmark in headless Chromium against a real router and mesh it starts itself.

    .venv/bin/python bench/dashboard_bench.py [--hosts 0,99,499] [--probes 60] [--busy-seconds 20]

Measures, with `--hosts` simulated hosts publishing every second:
  * latency from a tracker's publish to the DOM update: the overview tile (via nerve.digest, one per
    orchestrator tick) and the open host detail (via nerve.analysis.<host>), p50 / p99;
  * page load (navigation start) to the first complete overview (every host's tile in the DOM);
  * the page's main-thread busy time per second (Chrome DevTools Performance.getMetrics TaskDuration).
Prints a table and, last, a one-line summary.
"""

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autobahn.wamp.exception import ApplicationError  # noqa: E402
from twisted.internet import reactor, threads  # noqa: E402

from components.testing.live import ComponentProcess, RouterProcess, join, measurement, publish_acknowledged  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
PROBE = "bench-probe"

# Records (epoch ms, text) each time the observed element's text changes: the moment the DOM holds the new value.
OBSERVE = """([selector, key]) => new Promise((resolve) => {
    window[key] = [];
    const attach = () => {
        const el = document.querySelector(selector);
        if (!el) return setTimeout(attach, 20);
        new MutationObserver(() => window[key].push([performance.timeOrigin + performance.now(), el.textContent]))
            .observe(el, {childList: true, characterData: true, subtree: true});
        resolve(true);
    };
    attach();
})"""


def wamp(function, *args, **kwargs):
    """Run a Deferred-returning function in the reactor thread and wait for its result."""
    return threads.blockingCallFromThread(reactor, function, *args, **kwargs)


def percentile(values, fraction):
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def probe_value(index):
    # 89 distinct values ending in .5: a value recurs only after 89 samples, so each DOM text maps to one publish.
    return 10.5 + (index * 37) % 89


def latencies(published, observed):
    """For each observed text, the latency from the latest publish of that value before it appeared (ms)."""
    result = []
    for at, text in observed:
        candidates = [sent for sent, value in published if f"{value:.1f}%" == text.strip() and sent <= at]
        if candidates:
            result.append(at - max(candidates))
    return result


def main_thread_busy(page, seconds):
    """Main-thread task time per second of wall time over `seconds` (ms/s), and its breakdown."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable", {"timeDomain": "timeTicks"})

    def snapshot():
        return {metric["name"]: metric["value"] for metric in cdp.send("Performance.getMetrics")["metrics"]}

    start, began = snapshot(), time.monotonic()
    time.sleep(seconds)
    end, elapsed = snapshot(), time.monotonic() - began
    cdp.detach()
    per_second = {name: (end.get(name, 0) - start.get(name, 0)) * 1000 / elapsed
                  for name in ("TaskDuration", "ScriptDuration", "LayoutDuration", "RecalcStyleDuration")}
    return per_second


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=lambda text: [int(h) for h in text.split(",")], default=[0, 99, 499],
                        help="simulated hosts besides the probe host, one run per count (default 0,99,499: 1, 100, 500 hosts)")
    parser.add_argument("--probes", type=int, default=60, help="probe measurements for the latency (default 60)")
    parser.add_argument("--loads", type=int, default=5, help="page loads to time (default 5)")
    parser.add_argument("--busy-seconds", type=float, default=20.0, help="window for main-thread time (default 20 s)")
    parser.add_argument("--tick", type=float, default=0.25, help="orchestrator digest tick in s (default 0.25, its default)")
    args = parser.parse_args()
    if not 1 <= args.probes <= 88:
        parser.error("--probes must be between 1 and 88 (probe values must not repeat)")
    threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True).start()
    summaries = []
    try:
        for hosts in args.hosts:
            summaries.append(run(args, hosts))
    finally:
        reactor.callFromThread(reactor.stop)
    print("summary: " + "; ".join(summaries))


def run(args, hosts):
    """Every measure with `hosts` simulated hosts and the probe; prints the table and returns a summary fragment."""
    from playwright.sync_api import sync_playwright

    workdir = Path(tempfile.mkdtemp(prefix="nerve-dashboard-bench-"))
    router = RouterProcess(workdir).start()
    processes = []
    rows = []
    try:
        processes += [ComponentProcess(router, "orchestrator", "--tick", str(args.tick)),
                      ComponentProcess(router, "analyzer", "--authid", "bench-a1"),
                      ComponentProcess(router, "analyzer", "--authid", "bench-a2")]
        if hosts:
            processes.append(ComponentProcess(router, "tracker", "--hosts", str(hosts), "--interval", "1"))
        watcher = wamp(join, router.websocket_url)
        tracker = wamp(join, router.rawsocket_url, "tracker", PROBE, router.ticket("tracker", PROBE))
        print(f"router on :{router.port}; waiting for {hosts} simulated hosts ...", file=sys.stderr)
        deadline = time.monotonic() + 60
        seq = 0

        def publish(value):
            nonlocal seq
            seq += 1
            sent = time.time() * 1000
            wamp(publish_acknowledged, tracker, f"nerve.measure.{PROBE}",
                 measurement(PROBE, seq, {"cpu": value, "mem": 40.0}, run="bench", interval=1.0))
            return sent

        while True:
            publish(10.0)
            try:
                known = len(wamp(watcher.call, "nerve.snapshot")["hosts"])
            except ApplicationError:  # the orchestrator has not registered yet
                known = 0
            if known >= hosts + 1:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"only {known} hosts reported within 60 s")
            time.sleep(0.5)
        time.sleep(3)  # a few rounds so every host has an analysis

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)

            # 1. page load to the first complete overview, fresh context each time (no cache)
            loads = []
            for _ in range(args.loads):
                context = browser.new_context(viewport={"width": 1280, "height": 800})
                page = context.new_page()
                page.goto(router.http_url)
                page.wait_for_function("(n) => window.nerve && window.nerve.overview.firstFullOverviewMs !== null"
                                       " && document.querySelectorAll('#tiles li').length >= n",
                                       arg=hosts + 1, timeout=30000)
                loads.append(page.evaluate("() => window.nerve.overview.firstFullOverviewMs"))
                context.close()
            rows.append(("page load → full overview", f"{hosts + 1} tiles",
                         f"median {statistics.median(loads):.0f} ms", f"min {min(loads):.0f} / max {max(loads):.0f} ms",
                         f"n={len(loads)}"))

            # 2. latency: one page on the overview, one on the probe's host detail
            overview = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            overview.goto(router.http_url)
            overview.wait_for_function(f"() => window.nerve && window.nerve.overview.host('{PROBE}')?.refs", timeout=30000)
            detail = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            detail.goto(f"{router.http_url}#/host/{PROBE}")
            publish(probe_value(args.probes + 1))
            detail.wait_for_function("() => document.querySelector('#detail-view tr[data-metric=\"cpu\"]')", timeout=30000)
            overview.evaluate(OBSERVE, [f"#tiles li[data-host='{PROBE}'] .kv .v", "probeOverview"])
            detail.evaluate(OBSERVE, ["#detail-view tr[data-metric='cpu'] td", "probeDetail"])
            # The same events at a Python subscriber: how much of the latency is the pipeline, how much the page.
            arrivals = {"digest": {}, "analysis": {}}

            def on_digest(digest):
                entry = digest.get("hosts", {}).get(PROBE)
                if entry and entry.get("cpu") is not None:
                    arrivals["digest"].setdefault(f"{entry['cpu']:.1f}%", time.time() * 1000)

            def on_analysis(analysis):
                value = analysis.get("metrics", {}).get("cpu", {}).get("value")
                if value is not None:
                    arrivals["analysis"].setdefault(f"{value:.1f}%", time.time() * 1000)

            wamp(watcher.subscribe, on_digest, "nerve.digest")
            wamp(watcher.subscribe, on_analysis, f"nerve.analysis.{PROBE}")
            published = []
            print(f"publishing {args.probes} probe measurements ...", file=sys.stderr)
            for index in range(args.probes):
                value = probe_value(index)
                published.append((publish(value), value))
                # Just over a tick apart, with jitter, so the probes land at every phase of the digest tick.
                time.sleep(args.tick * 1.05 + random.uniform(0, 0.3))
            time.sleep(args.tick + 1)
            on_overview = latencies(published, overview.evaluate("() => window.probeOverview"))
            on_detail = latencies(published, detail.evaluate("() => window.probeDetail"))
            at_python = {kind: latencies(published, [(at, text) for text, at in seen.items()])
                         for kind, seen in arrivals.items()}
            for name, path, values in (("publish → overview tile (DOM)", "digest", on_overview),
                                       ("publish → digest at a Python client", "digest", at_python["digest"]),
                                       ("publish → host detail (DOM)", "nerve.analysis", on_detail),
                                       ("publish → analysis at a Python client", "nerve.analysis", at_python["analysis"])):
                rows.append((name, path, f"p50 {percentile(values, 0.5):.0f} ms", f"p99 {percentile(values, 0.99):.0f} ms",
                             f"n={len(values)}"))

            # 3. main-thread time per second, one page open at a time (same-site pages may share a renderer)
            detail.context.close()
            busy_overview = main_thread_busy(overview, args.busy_seconds)
            long_tasks = overview.evaluate("""() => new Promise((resolve) => {
                const seen = []; const observer = new PerformanceObserver((list) => seen.push(...list.getEntries()));
                observer.observe({type: 'longtask'}); setTimeout(() => { observer.disconnect();
                resolve(seen.map((entry) => entry.duration)); }, 5000); })""")
            overview.evaluate(f"() => {{ window.location.hash = '#/host/{PROBE}'; }}")
            overview.wait_for_function("() => document.querySelectorAll('#detail-view .chart').length > 0", timeout=30000)
            time.sleep(2)
            busy_detail = main_thread_busy(overview, args.busy_seconds)
            for name, busy in (("main thread, overview", busy_overview), ("main thread, host detail", busy_detail)):
                rows.append((name, f"{hosts + 1} hosts live", f"{busy['TaskDuration']:.0f} ms/s",
                             f"script {busy['ScriptDuration']:.0f}, style {busy['RecalcStyleDuration']:.0f}, "
                             f"layout {busy['LayoutDuration']:.0f} ms/s", f"{args.busy_seconds:.0f} s"))
            rows.append(("long tasks (>50 ms), overview", "5 s window", f"{len(long_tasks)}",
                         f"max {max(long_tasks, default=0):.0f} ms", ""))
            browser.close()

        widths = [max(len(str(row[i])) for row in rows) for i in range(5)]
        print(f"\n{hosts + 1} hosts (probe + {hosts} simulated)")
        print("  ".join(title.ljust(width) for title, width in zip(("measure", "path", "value", "detail", "n"), widths)))
        for row in rows:
            print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))
        return (f"{hosts + 1} hosts, tick {args.tick:g} s: publish→tile p50 {percentile(on_overview, 0.5):.0f} ms "
                f"p99 {percentile(on_overview, 0.99):.0f} ms, publish→detail p50 {percentile(on_detail, 0.5):.0f} ms "
                f"p99 {percentile(on_detail, 0.99):.0f} ms, load→full overview {statistics.median(loads):.0f} ms, "
                f"main thread {busy_overview['TaskDuration']:.0f} ms/s (overview), {busy_detail['TaskDuration']:.0f} ms/s (detail)")
    finally:
        for process in processes:
            process.stop()
        router.stop()


if __name__ == "__main__":
    main()
