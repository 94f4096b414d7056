"""The simulator's own CPU per simulated host; with --baseline, against a git revision in one run.

    .venv/bin/python bench/simulator_bench.py [--hosts 5000] [--seconds 15] [--baseline REV] [--rounds 2]

Why: in pipeline_bench one simulator stands in for thousands of machines on the machine that also
runs the router, so its CPU is taken from the pipeline; what a real tracker costs its own machine
is tracker_bench's figure. Method: a real router on a free port and a subscriber to
nerve.measure.* in this process (so the simulator publishes as in the pipeline);
then `nerve tracker --hosts H --interval 1` from each source tree (REV in a temporary git
worktree, then this checkout), alternating for --rounds rounds, each measured for --seconds after
a 5 s warm-up: the simulator process's CPU (% of one core and µs per simulated host) and the
measurements delivered per second.
"""

import argparse
import tempfile

from autobahn.wamp.types import SubscribeOptions
from twisted.internet import defer, task

from common import CpuMeter, machine_line  # noqa: E402 (puts the project on sys.path)
from components.testing.live import ComponentProcess, RouterProcess, join, sleep, wait_until  # noqa: E402
from trees import add_tree_arguments, best_of_trees, source_trees  # noqa: E402

WARM_UP = 5.0


@defer.inlineCallbacks
def measure(router, source, received, args):
    """(CPU % of one core, measurements delivered per second) of one simulator run from `source`."""
    simulator = ComponentProcess(router, "tracker", "--hosts", str(args.hosts), "--interval", "1", source=source)
    try:
        start = received[0]
        yield wait_until(lambda: received[0] - start >= args.hosts, timeout=60, message="a first round of measurements")
        yield sleep(WARM_UP)
        meter = CpuMeter("simulator", simulator.process.pid, children=False)
        meter.begin()
        first = received[0]
        yield sleep(args.seconds)
        cpu, _ = meter.end()
        delivered = (received[0] - first) / args.seconds
    finally:
        simulator.stop()
    yield sleep(2)  # the stopped simulator's last acknowledgements drain
    return cpu, delivered


@defer.inlineCallbacks
def main(reactor, args):
    router = RouterProcess(tempfile.mkdtemp(prefix="nerve-simulator-bench-")).start()
    rows = []
    try:
        observer = yield join(router.rawsocket_url, "operator", "simulator-bench",
                              router.ticket("operator", "simulator-bench"), serializers=("msgpack",))
        received = [0]

        def on_measure(*args, **kwargs):
            received[0] += 1

        yield observer.subscribe(on_measure, "nerve.measure.", options=SubscribeOptions(match="prefix"))
        with source_trees(args.baseline) as trees:
            for round_index in range(args.rounds):
                for name, source in trees:
                    cpu, delivered = yield measure(router, source, received, args)
                    rows.append((round_index + 1, name, cpu, delivered))
                    print(f"  round {round_index + 1}, {name}: {cpu:.1f} % of a core", flush=True)
        yield observer.leave()
    finally:
        router.stop()

    print(f"{machine_line()}; simulator of {args.hosts} hosts at 1 Hz, {args.seconds} s per run after {WARM_UP:.0f} s warm-up")
    print(f"{'round':>5} {'simulator':<16} {'CPU % of a core':>15} {'us per host':>11} {'delivered/s':>11}")
    for round_index, name, cpu, delivered in rows:
        print(f"{round_index:>5} {name:<16} {cpu:>15.1f} {cpu / 100 / args.hosts * 1e6:>11.1f} {delivered:>11.0f}")
    summary = best_of_trees(trees, [(name, cpu) for _, name, cpu, _ in rows], args.baseline,
                            lambda cpu: f"{cpu:.1f} % ({cpu / 100 / args.hosts * 1e6:.1f} us per host)")
    print(f"summary: simulator CPU at {args.hosts} hosts, best of {args.rounds}: {summary}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_tree_arguments(parser, "simulator", hosts=5000, seconds=15.0, rounds=2)
    task.react(main, (parser.parse_args(),))
