"""Dashboard benchmark: the fleet overview in headless Chromium, against a real router and mesh it starts itself.

    .venv/bin/python bench/dashboard_bench.py [--hosts 999,4999] [--pages 2] [--probes 100] [--busy-seconds 20]

For each `--hosts` count (simulated hosts at 1 Hz besides one probe host; with an orchestrator, `--analyzers`
analyzers and the alert keeper), with `--pages` dashboards open on the overview, it measures:
  * publish → overview updated: from the probe's publish to the moment the overview's hover card of the probe
    (the map) shows the value, p50 / p99, beside the same digests' arrival at a Python client (the pipeline's part);
  * the main thread's busy share of each second (Chrome DevTools TaskDuration: scripts, style, layout, paint and
    every other task, so long tasks and rendering both count), mean and worst second, and long tasks (> 50 ms);
    beside the share of each second the renderer's main thread ran on a core and waited for one (Linux
    schedstat), which tells a heavy page from a saturated machine;
  * the renderer processes' CPU time per page (what the pages cost whatever else loads the machine);
  * DOM nodes in the document (elements, text and the rest) and page memory (the renderer's proportional set
    size, and its JS heap);
  * page open (navigation start) → every host drawn, over `--loads` fresh pages;
  * search, filter and sort: from the control's input event to the end of the frame that redrew the overview.
Prints a table per count and, last, a summary line with PASS / FAIL against the targets of issue 21.
"""

import argparse
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from itertools import count as count_from, islice
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autobahn.wamp.exception import ApplicationError  # noqa: E402
from twisted.internet import reactor, threads  # noqa: E402

from bench.common import (CHROMIUM_FLAGS, OutsideMeter, busy_share, interrupt_on_sigterm, machine_line,  # noqa: E402
                          percentile, scheduler_seconds, stolen_share)
from components.monitor.orchestrator import digest_entries  # noqa: E402
from components.testing.live import ComponentProcess, RouterProcess, join, measurement, publish_acknowledged  # noqa: E402
from components.testing.raw import router_worker  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
# % of one core that other processes may take during the probes before the summary calls a run skewed.
OUTSIDE_WARN_SHARE = 10
PROBE = "bench-probe"
VIEWPORT = {"width": 1280, "height": 800}

# Targets of issue 21, per page: (measure key, limit, unit).
TARGETS = {
    "latency_p99_ms": (500, "ms"),
    "busy_worst_share": (0.25, ""),
    "dom_nodes": (5000, ""),
    "memory_mb": (300, "MB"),
    "open_to_full_ms": (2000, "ms"),
    "filter_redraw_ms": (100, "ms"),
}

# Installed before the page's own scripts: records when the overview first has `want` hosts drawn (ms since
# navigation start), checked once per animation frame.
FULL_FLEET_PROBE = """(want) => {
    window.__fullFleetAt = null;
    const check = () => {
        const overview = window.nerve && window.nerve.overview;
        if (overview && overview.drawnHosts >= want) { window.__fullFleetAt = performance.now(); return; }
        requestAnimationFrame(check);
    };
    requestAnimationFrame(check);
}"""

# The steps of a page's opening (ms since navigation start): scripts run, the session joined, the snapshot asked,
# received and applied (the page's performance marks; the first of each).
OPEN_STEPS = ("loaded", "nerve:joined", "nerve:snapshot-asked", "nerve:snapshot-received", "nerve:snapshot-applied")
READ_STEPS = """(names) => names.map((name) => name === 'loaded' ? window.nerve.loadedAt
    : (performance.getEntriesByName(name)[0] || {startTime: null}).startTime)"""

# Records (epoch ms, text) each time an element's text changes (the moment the page shows a new value) in
# window.__seen, from now on.
OBSERVE = """(selector) => {
    window.__seen = [];
    const el = document.querySelector(selector);
    new MutationObserver(() => window.__seen.push([performance.timeOrigin + performance.now(), el.textContent]))
        .observe(el, {childList: true, characterData: true, subtree: true});
}"""

# The probe's cell in page coordinates (its centre), or null while it is not drawn.
PROBE_CELL = """(id) => {
    const overview = window.nerve.overview, host = overview.host(id);
    const cell = host && overview.map.cellOf(host);
    if (!cell || overview.mode !== 'map') return null;
    const box = overview.map.canvas.getBoundingClientRect();
    return {x: box.left + cell.x + cell.size / 2, y: box.top + cell.y + cell.size / 2};
}"""

# Nodes in the document (what the page holds; DevTools' Nodes also counts removed ones not yet collected), and how
# many of them the alert feed holds (bounded by its groups and rows, it fills as hosts have open alerts).
COUNT_NODES = """() => {
    const count = (root) => {
        const walker = document.createTreeWalker(root, NodeFilter.SHOW_ALL);
        let nodes = 0;
        while (walker.nextNode()) nodes += 1;
        return nodes;
    };
    return {nodes: count(document), elements: document.getElementsByTagName('*').length,
            feed: count(document.querySelector('#alert-list')), groups: document.querySelector('#alert-list').children.length};
}"""

LONG_TASKS = """(seconds) => new Promise((resolve) => {
    const seen = [];
    const observer = new PerformanceObserver((list) => seen.push(...list.getEntries().map((entry) => entry.duration)));
    observer.observe({type: 'longtask'});
    setTimeout(() => { observer.disconnect(); resolve(seen); }, seconds * 1000);
})"""

# Each control change of the overview, timed from the input event to the end of the frame that redrew the view
# (a task queued from the next animation frame runs once that frame is rendered).
CONTROL_CHANGES = [("q", "sim-0"), ("q", "sim-00"), ("q", "sim-001"), ("q", ""), ("level", "problems"),
                   ("level", "HIGH"), ("level", "all"), ("sort", "name"), ("sort", "cpu"), ("sort", "level"),
                   ("q", "sim-4"), ("q", "")]
TIME_CONTROLS = """async (changes) => {
    const form = document.querySelector('#overview-controls'), times = [];
    for (const [name, value] of changes) {
        const control = form.elements[name];
        const started = performance.now();
        control.value = value;
        control.dispatchEvent(new Event(control.tagName === 'SELECT' ? 'change' : 'input', {bubbles: true}));
        await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
        times.push(performance.now() - started);
        await new Promise((resolve) => setTimeout(resolve, 300));
    }
    return times;
}"""

# The first percentage in a text: the CPU value in the card (CPU comes first) and in the detail's CPU row.
CPU_VALUE = re.compile(r"(\d+\.\d)%")


def tiles_up_to():
    """The overview's TILES_UP_TO (web/js/overview.js): up to that many hosts it shows tiles, past it the map."""
    source = (Path(__file__).resolve().parents[1] / "web" / "js" / "overview.js").read_text()
    return int(re.search(r"export const TILES_UP_TO = (\d+);", source).group(1))


def wamp(function, *args, **kwargs):
    """Run a Deferred-returning function in the reactor thread and wait for its result."""
    return threads.blockingCallFromThread(reactor, function, *args, **kwargs)


PROBE_VALUES = 89  # distinct probe values, ending in .5; index 0's is the heartbeat's


def probe_value(index):
    # A value recurs only every PROBE_VALUES publishes (about 90 s), long after its text showed: each text maps
    # to one publish. Probes skip the indices whose value is the heartbeat's.
    return 10.5 + (index * 37) % PROBE_VALUES


def probe_indices(start, count):
    """`count` probe indices from `start` on, without the heartbeat's value."""
    return list(islice((index for index in count_from(start) if index % PROBE_VALUES), count))


def latencies(published, observed):
    """For each publish (sent ms, value), ms until the first observed text (at ms, text) showing its value after it."""
    shown = [(at, match.group(1)) for at, text in observed if (match := CPU_VALUE.search(text))]
    result = []
    for sent, value in published:
        text = f"{value:.1f}"
        first = next((at for at, seen in shown if seen == text and at >= sent), None)
        if first is not None:
            result.append(first - sent)
    return result


def renderers():
    """The Chromium renderer processes this benchmark started."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if "--type=renderer" in " ".join(process.cmdline()):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def renderer_memory_mb():
    """Proportional set size (MB) of each renderer process."""
    return [process.memory_full_info().pss / 2**20 for process in renderers()]


def renderer_of(page):
    """The renderer process of a page: the one whose main thread ran while the page spun for 300 ms (Chromium keeps
    a spare renderer started, so the newest process is not always the page's)."""
    before = {process.pid: scheduler_seconds(process)[0] for process in renderers()}
    page.evaluate("() => { const end = performance.now() + 300; while (performance.now() < end); }")
    ran = {process: scheduler_seconds(process)[0] - before.get(process.pid, 0.0) for process in renderers()}
    return max(ran, key=ran.get)


def renderer_cpu_seconds():
    """CPU seconds (user + system) the renderer processes used so far: what the pages cost whatever the load."""
    return sum(sum(process.cpu_times()[:2]) for process in renderers())


class BusyMeter:
    """Main-thread busy share per second of one page, from DevTools Performance.getMetrics TaskDuration, beside the
    share of each second its renderer's main thread ran on a core and waited for one (Linux schedstat): wall-clock
    busy grows when a saturated machine holds the thread back, time on a core does not."""

    def __init__(self, page, renderer):
        self.cdp = page.context.new_cdp_session(page)
        self.cdp.send("Performance.enable", {"timeDomain": "timeTicks"})
        self.renderer = renderer
        self.last = self.read()
        self.shares, self.on_cpu, self.waiting = [], [], []

    def read(self):
        metrics = {metric["name"]: metric["value"] for metric in self.cdp.send("Performance.getMetrics")["metrics"]}
        metrics["wall"] = time.monotonic()
        metrics["on_cpu"], metrics["waiting"] = scheduler_seconds(self.renderer)
        return metrics

    def sample(self):
        now = self.read()
        wall = now["wall"] - self.last["wall"]
        self.shares.append((now["TaskDuration"] - self.last["TaskDuration"]) / wall)
        self.on_cpu.append((now["on_cpu"] - self.last["on_cpu"]) / wall)
        self.waiting.append((now["waiting"] - self.last["waiting"]) / wall)
        self.last = now
        return now


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=lambda text: [int(h) for h in text.split(",")], default=[999, 4999],
                        help="simulated hosts besides the probe, one run per count (default 999,4999: 1,000 and 5,000)")
    parser.add_argument("--pages", type=int, default=2, help="dashboards open on the overview (default 2)")
    parser.add_argument("--probes", type=int, default=100,
                        help="probe measurements for the latency, about 1.1 s each (default 100: a p99 of 100)")
    parser.add_argument("--detail-probes", type=int, default=20,
                        help="probe measurements for the open host detail's latency (default 20)")
    parser.add_argument("--loads", type=int, default=3, help="fresh page opens to time (default 3)")
    parser.add_argument("--busy-seconds", type=int, default=20, help="seconds of main-thread sampling (default 20)")
    parser.add_argument("--tick", type=float, default=0.25, help="orchestrator digest tick in s (default 0.25, its default)")
    parser.add_argument("--analyzers", type=int, default=2, help="analyzer processes (default 2)")
    parser.add_argument("--simulator-nice", type=int, default=10, choices=range(0, 20), metavar="0-19",
                        help="the simulator's nice value (default 10: it stands for the fleet's own machines, so it "
                             "yields the CPU to the mesh and the pages; 0 competes with them)")
    parser.add_argument("--alert-keeper", action=argparse.BooleanOptionalAction, default=True,
                        help="run the alert keeper, as `nerve up` does (default on; off measures the page without "
                             "its alert records)")
    args = parser.parse_args()
    if not (1 <= args.probes <= 1000 and 0 <= args.detail_probes <= 1000):
        parser.error("--probes must be 1 to 1000 and --detail-probes 0 to 1000")
    if args.pages < 1:
        parser.error("--pages must be at least 1")
    tiles = tiles_up_to()
    if min(args.hosts) + 1 <= tiles:  # the probe is one more host
        parser.error(f"--hosts must be {tiles} or more: the probes hover the probe's cell of the fleet map, "
                     f"which the overview shows past {tiles} hosts (tiles below)")
    print(machine_line(), file=sys.stderr)
    interrupt_on_sigterm()
    threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True).start()
    results = []
    try:
        for hosts in args.hosts:
            results.append(run(args, hosts))
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: run() has stopped what it started
        sys.exit("dashboard_bench: interrupted; its router and components are stopped")
    finally:
        reactor.callFromThread(reactor.stop)
    verdicts = []
    parts = []
    for total, measured in results:
        checks = []
        for key, (limit, unit) in TARGETS.items():
            value = measured[key]
            ok = value < limit
            verdicts.append(ok)
            shown = f"{value * 100:.0f} %" if key == "busy_worst_share" else f"{value:.0f}{' ' + unit if unit else ''}"
            checks.append(f"{key} {shown} {'PASS' if ok else 'FAIL'}")
        if measured["outside_share"] >= OUTSIDE_WARN_SHARE:
            checks.append(f"skewed: processes outside this bench took {measured['outside_share']:.0f} % of a core")
        parts.append(f"{total} hosts: " + ", ".join(checks))
    print(f"summary: {'PASS' if all(verdicts) else 'FAIL'}; " + "; ".join(parts))


def run(args, hosts):
    """Every measure with `hosts` simulated hosts and the probe; prints the table, returns (hosts, measures)."""
    from playwright.sync_api import sync_playwright

    total = hosts + 1
    workdir = Path(tempfile.mkdtemp(prefix="nerve-dashboard-bench-"))
    router = RouterProcess(workdir).start()
    orchestrator = ComponentProcess(router, "orchestrator", "--tick", str(args.tick))
    analyzers = [ComponentProcess(router, "analyzer", "--authid", f"bench-a{k}") for k in range(args.analyzers)]
    processes = [orchestrator, *analyzers]
    if args.alert_keeper:
        # As `nerve up` runs it: the pages' alert feed then carries what a real fleet's does.
        processes.append(ComponentProcess(router, "alerts", "--data-dir", str(workdir / "alerts")))
    keep_alive, probing = threading.Event(), threading.Event()
    try:
        if hosts:
            processes.append(ComponentProcess(router, "tracker", "--hosts", str(hosts), "--interval", "1",
                                              "--nice", str(args.simulator_nice)))
        # An operator session asks for the snapshot: its message limit is the backend one, not the page's.
        watcher = wamp(join, router.rawsocket_url, "operator", "bench-watch", router.ticket("operator", "bench-watch"))
        worker = router_worker(router)
        tracker = wamp(join, router.rawsocket_url, "tracker", PROBE, router.ticket("tracker", PROBE))
        print(f"router on :{router.port}; waiting for {hosts} simulated hosts ...", file=sys.stderr)
        seq = 0
        lock = threading.Lock()

        def publish(value):
            nonlocal seq
            with lock:  # the heartbeat and the probes publish from two threads; seq must grow by one each time
                seq += 1
                sent = time.time() * 1000
                wamp(publish_acknowledged, tracker, f"nerve.measure.{PROBE}",
                     measurement(PROBE, seq, {"cpu": value, "mem": 40.0}, run="bench", interval=1.0))
            return sent

        deadline = time.monotonic() + 90
        while True:
            publish(10.0)
            try:
                known = len(wamp(watcher.call, "nerve.snapshot")["hosts"])
            except ApplicationError:  # the orchestrator has not registered yet
                known = 0
            if known >= total:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"only {known} hosts reported within 90 s")
            time.sleep(0.5)
        # The probe measures once a second like the others (a value no probe uses), so it is never stale.

        def heartbeat():
            while not keep_alive.wait(1.0):
                if not probing.is_set():  # a beat in the same digest tick as a probe would hide the probe's value
                    publish(probe_value(0))

        threading.Thread(target=heartbeat, daemon=True).start()
        time.sleep(3)  # a few rounds so every host has an analysis

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
            rows = []

            # 1. page open to every host drawn, a fresh context (no cache) each time
            opens, steps = [], []
            for _ in range(args.loads):
                context = browser.new_context(viewport=VIEWPORT)
                page = context.new_page()
                page.add_init_script(f"({FULL_FLEET_PROBE})({total})")
                page.goto(router.http_url)
                page.wait_for_function("() => window.__fullFleetAt !== null", timeout=30000)
                opens.append(page.evaluate("() => window.__fullFleetAt"))
                steps.append(page.evaluate(READ_STEPS, list(OPEN_STEPS)) + [opens[-1]])
                context.close()
            rows.append(("page open → every host drawn", f"{total} hosts", f"median {statistics.median(opens):.0f} ms",
                         f"max {max(opens):.0f} ms", f"n={len(opens)}"))
            slowest = steps[opens.index(max(opens))]
            names = ("scripts", "joined", "snapshot asked", "received", "applied", "drawn")
            rows.append(("  steps of the slowest open", "ms since navigation",
                         ", ".join(f"{name} {at:.0f}" if at is not None else f"{name} -" for name, at in zip(names, slowest)),
                         "", ""))

            # 2. the dashboards on the overview; the first hovers the probe's cell and its card is observed
            pages, page_renderers = [], []
            for _ in range(args.pages):
                page = browser.new_context(viewport=VIEWPORT).new_page()
                page.goto(router.http_url)
                page.wait_for_function("(n) => window.nerve && window.nerve.overview.drawnHosts >= n", arg=total,
                                       timeout=30000)
                pages.append(page)
                page_renderers.append(renderer_of(page))
            first = pages[0]
            cell = first.wait_for_function(PROBE_CELL, arg=PROBE, timeout=10000).json_value()
            first.mouse.move(cell["x"], cell["y"])
            first.wait_for_function("(id) => document.querySelector('#fleet-card').dataset.host === id", arg=PROBE)
            # The same events at a Python client: how much of the latency is the pipeline, how much the page.
            at_python = {"digest": [], "analysis": []}

            def on_digest(digest):
                entry = digest_entries(digest).get(PROBE)
                if entry and entry.get("cpu") is not None:
                    at_python["digest"].append((time.time() * 1000, f"{entry['cpu']:.1f}%"))

            def on_analysis(analysis):
                value = analysis.get("metrics", {}).get("cpu", {}).get("value")
                if value is not None:
                    at_python["analysis"].append((time.time() * 1000, f"{value:.1f}%"))

            wamp(watcher.subscribe, on_digest, "nerve.digest")
            wamp(watcher.subscribe, on_analysis, f"nerve.analysis.{PROBE}")

            def probe(page, selector, indices):
                """Publish the probe values of `indices` about a second apart; their latency to `selector`'s text."""
                page.evaluate(OBSERVE, selector)
                published = []
                probing.set()
                print(f"publishing {len(indices)} probe measurements ...", file=sys.stderr)
                for index in indices:
                    value = probe_value(index)
                    published.append((publish(value), value))
                    # Just over a second apart (the probe measures at 1 Hz like the fleet), at every phase of the tick.
                    time.sleep(1.0 + random.uniform(0, args.tick))
                time.sleep(args.tick + 1)
                probing.clear()
                return published, latencies(published, page.evaluate("() => window.__seen"))

            received_before, probes_started = wamp(watcher.call, "nerve.stats")["received"], time.monotonic()
            machine_before, worker_before, outside = psutil.cpu_times(), scheduler_seconds(worker), OutsideMeter()
            published, on_overview = probe(first, "#fleet-card", probe_indices(1, args.probes))
            machine_after, worker_after = psutil.cpu_times(), scheduler_seconds(worker)
            outside_share = outside.share()
            probing_seconds = time.monotonic() - probes_started
            received = (wamp(watcher.call, "nerve.stats")["received"] - received_before) / probing_seconds
            analyzer_nice = ", ".join(str(psutil.Process(analyzer.process.pid).nice()) for analyzer in analyzers)
            rows.append(("measurements received", "by the orchestrator", f"{received:.0f} /s",
                         f"{total} hosts at 1 Hz", f"nice: simulator {args.simulator_nice}, "
                                                   f"analyzers {analyzer_nice}"))
            # What the tail depends on: how saturated the machine was, and how long the router waited for a core.
            # The router's CPU per measurement is the same work in every run, so it shows how fast the VM ran.
            on_cpu, waiting = (100 * (after - before) / probing_seconds for before, after in zip(worker_before, worker_after))
            rows.append(("machine during the probes", "both cores",
                         f"busy {busy_share(machine_before, machine_after) * 100:.0f} %, "
                         f"stolen {stolen_share(machine_before, machine_after) * 100:.0f} %, "
                         f"outside this bench {outside_share:.0f} % of a core",
                         f"router worker on a core {on_cpu:.0f} %, waiting for one {waiting:.0f} %",
                         f"router {on_cpu * 1e4 / received:.0f} µs CPU per measurement"))
            on_python = latencies(published, at_python["digest"])
            for name, values in (("publish → overview updated", on_overview),
                                 ("publish → digest at a Python client", on_python)):
                rows.append((name, "hover card" if "overview" in name else "reference",
                             f"p50 {percentile(values, 0.5):.0f} ms", f"p99 {percentile(values, 0.99):.0f} ms",
                             f"n={len(values)}"))

            # 3. main thread, DOM and memory of every page, sampled each second while the fleet runs
            meters = [BusyMeter(page, renderer) for page, renderer in zip(pages, page_renderers)]
            cpu_before, cpu_started = renderer_cpu_seconds(), time.monotonic()
            first.evaluate(f"() => {{ window.__long = ({LONG_TASKS})({args.busy_seconds}); }}")
            last = {}
            for _ in range(args.busy_seconds):
                time.sleep(1.0)
                for k, meter in enumerate(meters):
                    last[k] = meter.sample()
            long_tasks = first.evaluate("() => window.__long")
            keep_alive.set()
            memory = renderer_memory_mb()
            renderer_cpu = (renderer_cpu_seconds() - cpu_before) / (time.monotonic() - cpu_started) / len(pages)
            rows.append(("renderer CPU per page", "user + system", f"{renderer_cpu * 100:.1f} % of a core",
                         "all renderers / pages", ""))
            in_document = [page.evaluate(COUNT_NODES) for page in pages]
            shares = [share for meter in meters for share in meter.shares]
            worst_page = max(range(len(meters)), key=lambda k: max(meters[k].shares))
            rows.append(("main thread busy, per second", f"{len(pages)} pages × {args.busy_seconds} s",
                         f"mean {statistics.mean(shares) * 100:.1f} %",
                         f"p95 {percentile(shares, 0.95) * 100:.1f} %, worst {max(shares) * 100:.1f} %",
                         f"page {worst_page + 1} worst"))
            worst = meters[worst_page]
            worst_second = worst.shares.index(max(worst.shares))
            rows.append(("  its worst second", f"page {worst_page + 1}, second {worst_second + 1}",
                         f"on a core {worst.on_cpu[worst_second] * 100:.1f} %",
                         f"waiting for one {worst.waiting[worst_second] * 100:.1f} %", "renderer main thread"))
            on_cpu = [share for meter in meters for share in meter.on_cpu]
            waiting = [share for meter in meters for share in meter.waiting]
            rows.append(("main thread on a core, per second", "renderer main thread", f"mean {statistics.mean(on_cpu) * 100:.1f} %",
                         f"worst {max(on_cpu) * 100:.1f} %; waiting for one mean {statistics.mean(waiting) * 100:.1f} %, "
                         f"worst {max(waiting) * 100:.1f} %", "schedstat"))
            rows.append(("long tasks (> 50 ms)", f"page 1, {args.busy_seconds} s", f"{len(long_tasks)}",
                         f"max {max(long_tasks, default=0):.0f} ms", ""))
            nodes = max(count["nodes"] for count in in_document)
            fullest = max(in_document, key=lambda count: count["nodes"])
            rows.append(("DOM nodes", "in the document", f"{nodes}", f"elements {max(c['elements'] for c in in_document)}",
                         f"DevTools {max(last[k]['Nodes'] for k in last):.0f} with garbage"))
            rows.append(("  of which the alert feed", "its groups' nodes", f"{fullest['feed']}",
                         f"{fullest['groups']} groups", "fills as hosts have open alerts"))
            heap = max(last[k]["JSHeapUsedSize"] for k in last) / 2**20
            controls = first.evaluate(TIME_CONTROLS, CONTROL_CHANGES)
            if args.detail_probes:
                # 4. the probe's host detail, live from nerve.analysis.<host>
                first.evaluate(f"() => {{ window.location.hash = '#/host/{PROBE}'; }}")
                cpu_cell = "#detail-view tr[data-metric='cpu'] td"
                first.wait_for_function(f"() => document.querySelector(\"{cpu_cell}\")", timeout=30000)
                published, on_detail = probe(first, cpu_cell, probe_indices(args.probes * 2, args.detail_probes))
                for name, values in (("publish → host detail updated", on_detail),
                                     ("publish → analysis at a Python client", latencies(published, at_python["analysis"]))):
                    rows.append((name, "CPU row" if "detail" in name else "reference",
                                 f"p50 {percentile(values, 0.5):.0f} ms", f"p99 {percentile(values, 0.99):.0f} ms",
                                 f"n={len(values)}"))
            slowest = max(range(len(controls)), key=controls.__getitem__)
            rows.append(("search / filter / sort → redrawn", f"{len(controls)} changes", f"median {statistics.median(controls):.0f} ms",
                         f"max {controls[slowest]:.0f} ms ({'{} {!r}'.format(*CONTROL_CHANGES[slowest])})",
                         f"n={len(controls)}"))
            rows.append(("page memory", "renderer PSS", f"{max(memory, default=float('nan')):.0f} MB",
                         f"JS heap {heap:.0f} MB", f"{len(memory)} renderers"))
            browser.close()

        widths = [max(len(str(row[i])) for row in rows) for i in range(5)]
        guard = "" if args.alert_keeper else ", no alert keeper"
        print(f"\n{total} hosts (probe + {hosts} simulated at 1 Hz), {args.pages} dashboards, tick {args.tick:g} s{guard}")
        print("  ".join(title.ljust(width) for title, width in zip(("measure", "what", "value", "detail", "n"), widths)))
        for row in rows:
            print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))
        return total, {"latency_p99_ms": percentile(on_overview, 0.99), "busy_worst_share": max(shares),
                       "dom_nodes": nodes, "memory_mb": max(memory, default=float("nan")),
                       "open_to_full_ms": max(opens), "filter_redraw_ms": max(controls), "outside_share": outside_share}
    finally:
        keep_alive.set()
        for process in processes:
            process.stop()
        router.stop()


if __name__ == "__main__":
    main()
