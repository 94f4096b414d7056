"""Load held: N simulated hosts at 1 Hz for S seconds through one router, two analyzers and two open dashboards.

    .venv/bin/python bench/load_bench.py [--hosts 1000] [--seconds 60] [--dashboards 2]

Reports loss (gaps between what the simulator published and what the orchestrator got),
p50/p99 measurement-to-analysis latency, router CPU and RSS, and each process's CPU so
the first thing to saturate is visible. Dashboards are real headless Chromium pages.
"""

import argparse
import tempfile
import time

from autobahn.wamp.types import SubscribeOptions
from twisted.internet import defer, task

from common import CpuMeter, machine_line, open_dashboards, percentile  # noqa: E402 (also puts the project on sys.path)
from components.testing.live import ComponentProcess, RouterProcess, join, sleep, wait_for_callees  # noqa: E402



@defer.inlineCallbacks
def main(reactor, args):
    router = RouterProcess(tempfile.mkdtemp(prefix="nerve-load-")).start()
    processes = [("orchestrator", ComponentProcess(router, "orchestrator")),
                 ("analyzer-1", ComponentProcess(router, "analyzer", "--authid", "load-a")),
                 ("analyzer-2", ComponentProcess(router, "analyzer", "--authid", "load-b"))]
    dashboards = []
    try:
        observer = yield join(router.rawsocket_url, "operator", "load-observer", router.ticket("operator", "load-observer"),
                              serializers=("msgpack",))
        yield wait_for_callees(observer, "nerve.analyze", 2)
        latencies, recording = [], [False]

        def on_analysis(analysis):
            if recording[0]:
                latencies.append(time.time() - analysis["ts"])

        yield observer.subscribe(on_analysis, "nerve.analysis.", options=SubscribeOptions(match="prefix"))
        dashboards.extend(open_dashboards(router.http_url, args.dashboards, args.seconds + 40))
        simulator = ComponentProcess(router, "tracker", "--hosts", str(args.hosts), "--interval", "1")
        processes.append(("simulator", simulator))
        yield sleep(15)  # warm-up: everything joined, windows filling, dashboards loaded
        meters = [CpuMeter("router", router.process.pid)] + [CpuMeter(name, p.process.pid) for name, p in processes]
        meters += [CpuMeter(f"dashboard-{i + 1}", d.pid) for i, d in enumerate(dashboards)]
        for meter in meters:
            meter.begin()
        before = yield observer.call("nerve.stats")
        recording[0] = True
        yield sleep(args.seconds)
        recording[0] = False
        usage = {meter.name: meter.end() for meter in meters}
        simulator.stop()
        yield sleep(3)
        after = yield observer.call("nerve.stats")
        yield observer.leave()
    finally:
        for dashboard in dashboards:
            dashboard.terminate()
        for _, process in processes:
            process.stop()
        router.stop()

    received = after.get("received", 0) - before.get("received", 0)
    gaps = after.get("gaps", 0)
    p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
    print(f"{machine_line()}; {args.hosts} hosts at 1 Hz for {args.seconds} s, 2 analyzers, {args.dashboards} Chromium dashboards")
    print(f"{'process':<14} {'CPU % of a core':>16} {'RSS MB':>8}")
    for name, (cpu, rss) in sorted(usage.items(), key=lambda item: -item[1][0]):
        print(f"{name:<14} {cpu:>16.1f} {rss:>8.0f}")
    print(f"measurements received in the window: {received} (offered ~{args.hosts * args.seconds}); "
          f"gaps (lost): {gaps}; duplicates discarded: {after.get('duplicates', 0)}")
    print(f"analysis events: {len(latencies)}; measurement -> analysis p50 {p50:.0f} ms, p99 {p99:.0f} ms; "
          f"lag at end {after.get('lag_seconds')} s; backpressure refusals {after.get('backpressure', 0)}")
    busiest = max(usage.items(), key=lambda item: item[1][0])
    print(f"summary: {args.hosts} hosts, loss {gaps}, p50 {p50:.0f} ms p99 {p99:.0f} ms, router {usage['router'][0]:.0f} % CPU "
          f"{usage['router'][1]:.0f} MB; busiest: {busiest[0]} at {busiest[1][0]:.0f} %")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--dashboards", type=int, default=2)
    task.react(main, (parser.parse_args(),))
