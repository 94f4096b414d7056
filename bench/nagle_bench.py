"""TCP_NODELAY on and off, in one run: what Nagle's algorithm costs the pipeline.

    .venv/bin/python bench/nagle_bench.py [--hosts 1000] [--seconds 20] [--rounds 2]

Autobahn's and Crossbar's RawSocket leave Nagle's algorithm on; nerve turns it off on both
sides (router/tuning.py, the runner). Here, alternating for `--rounds` rounds, a router is started
with it on and then off (`tcp_nodelay` in the router config's component extra `tuning`) and the
orchestrator, two analyzers and a simulator of `--hosts` hosts run with `--tcp-nodelay` or
`--no-tcp-nodelay`; each setting is measured as one pipeline_bench step (8 s warm-up, then
`--seconds`): measurement-to-analysis p50/p99 at the orchestrator and at a subscriber of 20
hosts, the analyze call round trip, router messages/s and CPU. No dashboards.
"""

import argparse
import tempfile

from twisted.internet import defer, task

from common import machine_line  # noqa: E402 (puts the project on sys.path)
from components.testing import ComponentProcess, RouterProcess, join, wait_for_callees  # noqa: E402
from pipeline_bench import pipeline_step  # noqa: E402


@defer.inlineCallbacks
def measure(nodelay, args):
    """One pipeline step with TCP_NODELAY on or off on every connection."""
    flag = "--tcp-nodelay" if nodelay else "--no-tcp-nodelay"
    router = RouterProcess(tempfile.mkdtemp(prefix="nerve-nagle-"), tuning={"tcp_nodelay": nodelay}).start()
    processes = [("orchestrator", ComponentProcess(router, "orchestrator", flag))]
    processes += [(f"analyzer-{k}", ComponentProcess(router, "analyzer", "--authid", f"nagle-{k}", flag)) for k in (1, 2)]
    try:
        observer = yield join(router.rawsocket_url, "operator", "nagle-observer", router.ticket("operator", "nagle-observer"),
                              serializers=("msgpack",))
        yield wait_for_callees(observer, "nerve.analyze", 2)
        step = yield pipeline_step(router, observer, [(name, p.process) for name, p in processes], args.hosts, args.seconds,
                                   [flag])
        stats = yield observer.call("nerve.stats")
        step["call"] = stats.get("call_time") or {}
        yield observer.leave()
    finally:
        for _, process in processes:
            process.stop()
        router.stop()
    return step


@defer.inlineCallbacks
def main(reactor, args):
    rows = []
    for round_index in range(args.rounds):
        for nodelay in (True, False):
            step = yield measure(nodelay, args)
            rows.append((round_index + 1, nodelay, step))
            print(f"  round {round_index + 1}, TCP_NODELAY {'on' if nodelay else 'off'}: p99 {step['p99']:.0f} ms", flush=True)
    print(f"{machine_line()}; {args.hosts} simulated hosts at 1 Hz, 2 analyzers, {args.seconds:.0f} s per row")
    print(f"{'round':>5} {'TCP_NODELAY':>11} {'p50 ms':>7} {'p99 ms':>7} {'probe p99':>9} {'call p50':>8} {'call p99':>8} "
          f"{'lost':>5} {'router msg/s':>12} {'router CPU':>10}")
    for round_index, nodelay, step in rows:
        print(f"{round_index:>5} {'on' if nodelay else 'off':>11} {step['p50']:>7.0f} {step['p99']:>7.0f} "
              f"{step['probe_p99']:>9.0f} {step['call'].get('p50_ms', float('nan')):>8.0f} "
              f"{step['call'].get('p99_ms', float('nan')):>8.0f} {step['lost']:>5} {step['messages']:>12,.0f} "
              f"{step['router_cpu']:>9.0f}%")

    def best(nodelay, key):
        return min(step[key] for _, setting, step in rows if setting is nodelay)

    print(f"summary: {args.hosts} hosts, best of {args.rounds}: TCP_NODELAY on p50 {best(True, 'p50'):.0f} / p99 "
          f"{best(True, 'p99'):.0f} ms, off p50 {best(False, 'p50'):.0f} / p99 {best(False, 'p99'):.0f} ms "
          f"(Nagle's algorithm on: {best(False, 'p99') / best(True, 'p99'):.2f}x the p99)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    task.react(main, (parser.parse_args(),))
