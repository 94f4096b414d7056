"""Mesh figures in one run: start-up to first analysis, publish-to-analysis latency at N simulated hosts,
and the tracker's CPU and RSS at a 1 s interval.

    .venv/bin/python bench/mesh_bench.py [--hosts 100] [--seconds 30] [--tracker-seconds 60]

Everything runs on this machine against a real router on a free port; prints a table and a summary line.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

from autobahn.wamp.types import SubscribeOptions
from twisted.internet import defer, task

from common import CpuMeter, machine_line, percentile  # noqa: E402 (also puts the project on sys.path)
from components.node.routerctl import free_port  # noqa: E402
from components.testing.live import ComponentProcess, RouterProcess, join, sleep  # noqa: E402


@defer.inlineCallbacks
def measure_startup(workdir):
    """Seconds from `nerve up` to the first nerve.analysis event seen by a dashboard-like client."""
    port = free_port()
    secrets = os.path.join(workdir, "up-secrets.json")
    launched = time.monotonic()
    up = subprocess.Popen([sys.executable, "-m", "components", "up", "--port", str(port), "--secrets-file", secrets],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while True:
            try:
                session = yield join(f"ws://127.0.0.1:{port}/ws")
                break
            except Exception:
                yield sleep(0.05)
        first = defer.Deferred()
        yield session.subscribe(lambda *a, **k: first.called or first.callback(time.monotonic()), "nerve.analysis.",
                                options=SubscribeOptions(match="prefix"))
        seen = yield first
        yield session.leave()
        return seen - launched
    finally:
        up.terminate()
        up.wait(timeout=20)


@defer.inlineCallbacks
def measure_pipeline(workdir, hosts, seconds, tracker_seconds):
    """Latency of analysis events for simulated hosts, and the real tracker's cost, against one router."""
    router = RouterProcess(workdir).start()
    started = [ComponentProcess(router, "orchestrator"),
               ComponentProcess(router, "analyzer", "--authid", "bench-a"),
               ComponentProcess(router, "analyzer", "--authid", "bench-b"),
               ComponentProcess(router, "tracker", "--host-id", "bench-real", "--authid", "bench-real"),
               ComponentProcess(router, "tracker", "--hosts", str(hosts))]
    try:
        session = yield join(router.websocket_url, serializers=("msgpack",))
        latencies = []
        recording = [False]

        def on_analysis(analysis, details=None):
            if recording[0] and analysis["host_id"].startswith("sim-"):
                latencies.append(time.time() - analysis["ts"])

        yield session.subscribe(on_analysis, "nerve.analysis.", options=SubscribeOptions(match="prefix", details_arg="details"))
        yield sleep(8)  # warm-up: every process joined, first analyses done
        tracker = CpuMeter("tracker", started[3].process.pid, children=False)
        router_node = CpuMeter("router", router.process.pid)
        tracker.begin()
        router_node.begin()
        recording[0] = True
        yield sleep(seconds)
        recording[0] = False
        router_cpu = router_node.end()[0]
        yield sleep(max(tracker_seconds - seconds, 0))
        tracker_cpu, tracker_rss = tracker.end()
        stats = yield session.call("nerve.stats")
        yield session.leave()
        return latencies, tracker_cpu, tracker_rss, router_cpu, stats
    finally:
        for process in started:
            process.stop()
        router.stop()


@defer.inlineCallbacks
def main(reactor_, args):
    workdir = tempfile.mkdtemp(prefix="nerve-bench-")
    startup = yield measure_startup(workdir)
    latencies, tracker_cpu, tracker_rss, router_cpu, stats = yield measure_pipeline(workdir, args.hosts, args.seconds, args.tracker_seconds)
    p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
    expected = args.hosts * args.seconds
    print(machine_line())
    print(f"{'figure':<52} {'value':>12}")
    print(f"{'start-up: nerve up to first analysis event (s)':<52} {startup:>12.1f}")
    print(f"{f'analysis events received ({args.hosts} hosts x {args.seconds} s)':<52} {len(latencies):>12d}  (expected ~{expected})")
    print(f"{'publish -> analysis event p50 (ms)':<52} {p50:>12.1f}")
    print(f"{'publish -> analysis event p99 (ms)':<52} {p99:>12.1f}")
    print(f"{'router CPU (% of one core, all router processes)':<52} {router_cpu:>12.1f}")
    print(f"{f'tracker CPU over {args.tracker_seconds} s (% of one core)':<52} {tracker_cpu:>12.2f}")
    print(f"{'tracker RSS (MB)':<52} {tracker_rss:>12.1f}")
    print(f"{'orchestrator: duplicates / gaps / backpressure':<52} {stats.get('duplicates', 0):>4} / {stats.get('gaps', 0)} / {stats.get('backpressure', 0)}")
    print(f"summary: start-up {startup:.1f} s; latency p50 {p50:.0f} ms p99 {p99:.0f} ms at {args.hosts} hosts; "
          f"tracker {tracker_cpu:.2f} % CPU, {tracker_rss:.0f} MB RSS")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--tracker-seconds", type=int, default=60)
    task.react(main, (parser.parse_args(),))
