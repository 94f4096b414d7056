"""Tracker cost: CPU and memory of a real `nerve tracker` at a 1 s interval, next to the floor.

    .venv/bin/python bench/tracker_bench.py [--seconds 60] [--warmup 8]

Method: a real router on a free port, a real tracker (`nerve tracker --interval 1`, default
metric set) and a light operator session subscribed to nerve.measure.* so the tracker really
publishes (without a subscriber it would only buffer). The floor is a bare Python subprocess
that imports only psutil and, once a second, makes the same psutil calls as the tracker's
SystemSampler, with no networking. After a warm-up both are measured over the same span:
CPU % of one core from their CPU times, RSS and USS (memory only this process holds) at the
end. Prints a table and a `summary:` line with the ratios and whether the targets
(tracker < 0.5 % of one core and < 60 MB RSS) are met.
"""

import argparse
import subprocess
import sys
import tempfile

import psutil
from autobahn.wamp.types import SubscribeOptions
from twisted.internet import defer, task

from common import CpuMeter, machine_line  # noqa: E402 (also puts the project on sys.path)
from components.testing.live import ComponentProcess, RouterProcess, join, sleep, wait_until  # noqa: E402

CPU_TARGET, RSS_TARGET = 0.5, 60.0

# The same psutil calls as components.monitor.tracker.SystemSampler (init once, then sample() each second).
FLOOR_SCRIPT = """
import os, sys, time
import psutil

def counters():
    disk, net = psutil.disk_io_counters(), psutil.net_io_counters()
    return (time.monotonic(), disk.read_bytes if disk else 0, disk.write_bytes if disk else 0,
            net.bytes_recv if net else 0, net.bytes_sent if net else 0)

cores = psutil.cpu_count() or 1
mounts = [part.mountpoint for part in psutil.disk_partitions(all=False)]
psutil.cpu_percent(percpu=True)
last = counters()
deadline = time.monotonic() + float(sys.argv[1])
tick = time.monotonic()
while time.monotonic() < deadline:
    tick += 1.0
    time.sleep(max(tick - time.monotonic(), 0))
    per_core = psutil.cpu_percent(percpu=True)
    metrics = {"cpu": sum(per_core) / len(per_core), "load": os.getloadavg(),
               "mem": psutil.virtual_memory().percent, "swap": psutil.swap_memory().percent}
    for mountpoint in mounts:
        try:
            metrics[mountpoint] = psutil.disk_usage(mountpoint).percent
        except OSError:
            pass
    now = counters()
    metrics["rates"] = [(b - a) / max(now[0] - last[0], 1e-6) for a, b in zip(last[1:], now[1:])]
    last = now
    metrics["procs"] = len(psutil.pids())
"""


def uss_mb(pid):
    """Unique set size in MB (what stopping the process would free), or None where psutil cannot read it."""
    try:
        return psutil.Process(pid).memory_full_info().uss / 2**20
    except (psutil.AccessDenied, AttributeError):
        return None


@defer.inlineCallbacks
def main(reactor, args):
    router = RouterProcess(tempfile.mkdtemp(prefix="nerve-tracker-bench-")).start()
    tracker = ComponentProcess(router, "tracker", "--interval", "1")
    floor = subprocess.Popen([sys.executable, "-c", FLOOR_SCRIPT, str(args.warmup + args.seconds + 30)])
    try:
        observer = yield join(router.rawsocket_url, "operator", "tracker-bench", router.ticket("operator", "tracker-bench"))
        received = []
        yield observer.subscribe(lambda event: received.append(event["seq"]), "nerve.measure.",
                                 options=SubscribeOptions(match="prefix"))
        yield wait_until(lambda: received, timeout=60, message="the tracker's first measurement")
        yield sleep(args.warmup)  # start-up (imports, join, first samples) is not the steady cost
        meters = [CpuMeter("tracker", tracker.process.pid, children=False), CpuMeter("psutil floor", floor.pid, children=False)]
        for meter in meters:
            meter.begin()
        first = len(received)
        yield sleep(args.seconds)
        usage = {meter.name: meter.end() for meter in meters}
        uss = {"tracker": uss_mb(tracker.process.pid), "psutil floor": uss_mb(floor.pid)}
        published = len(received) - first
        yield observer.leave()
    finally:
        floor.terminate()
        floor.wait()
        tracker.stop()
        router.stop()

    print(f"{machine_line()}; tracker at 1 s interval, default metric set, measured over {args.seconds} s "
          f"after a {args.warmup} s warm-up")
    print(f"{'process':<14} {'CPU % of a core':>16} {'RSS MB':>8} {'USS MB':>8}")
    for name, (cpu, rss) in usage.items():
        unique = f"{uss[name]:>8.1f}" if uss[name] is not None else f"{'n/a':>8}"
        print(f"{name:<14} {cpu:>16.2f} {rss:>8.1f} {unique}")
    print(f"measurements the tracker published in the span: {published} (expected ~{args.seconds})")
    (tracker_cpu, tracker_rss), (floor_cpu, floor_rss) = usage["tracker"], usage["psutil floor"]
    cpu_ratio = tracker_cpu / floor_cpu if floor_cpu > 0 else float("inf")
    met = [f"CPU < {CPU_TARGET} % {'met' if tracker_cpu < CPU_TARGET else 'NOT met'}",
           f"RSS < {RSS_TARGET:.0f} MB {'met' if tracker_rss < RSS_TARGET else 'NOT met'}"]
    print(f"summary: tracker {tracker_cpu:.2f} % CPU {tracker_rss:.1f} MB RSS; floor {floor_cpu:.2f} % CPU "
          f"{floor_rss:.1f} MB RSS; ratio {cpu_ratio:.1f}x CPU {tracker_rss / floor_rss:.1f}x RSS; "
          f"targets: {', '.join(met)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=60, help="Length of the measured span.")
    parser.add_argument("--warmup", type=int, default=8, help="Seconds after the first measurement before measuring.")
    task.react(main, (parser.parse_args(),))
