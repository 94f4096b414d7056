"""One router tuning setting on and off, in one run: what it is worth to the router and to the pipeline.

    .venv/bin/python bench/tuning_bench.py --setting lazy_debug_format [--hosts 3000] [--seconds 20] [--rounds 2]
    .venv/bin/python bench/tuning_bench.py --setting tcp_nodelay --hosts 1000

The settings are router/tuning.py's (`tcp_nodelay`, `lazy_debug_format`, `freeze_startup_heap`, `join_reads_once`,
`large_messages_at_once`), each on by default.
Alternating for `--rounds` rounds, a router is started with the setting on and then off (the
router config's component extra `tuning`); with each router:
1. the ceiling flood of pipeline_bench (one publisher, one subscriber, RawSocket + msgpack,
   static permission): delivered events/s, router messages/s, router worker CPU and CPU time
   per routed message;
2. one pipeline_bench step (an orchestrator, two analyzers, a simulator of `--hosts` hosts at
   1 Hz, 8 s warm-up, then `--seconds`): measurement-to-analysis p50/p99 at the orchestrator and
   at a subscriber of 20 hosts, the analyze call round trip, router messages/s and CPU, and the
   router worker's garbage collections: ms per second during the step, and the longest one since
   the router started.
No dashboards. For tcp_nodelay and large_messages_at_once the components get the same setting
(`NERVE_TUNING=NAME=on|off`), so it is on or off on both sides.
"""

import argparse
import tempfile

from twisted.internet import defer, task

from common import machine_line  # noqa: E402 (puts the project on sys.path)
from components.testing.live import ComponentProcess, RouterProcess, join, wait_for_callees  # noqa: E402
from pipeline_bench import ceiling, pipeline_step, waves  # noqa: E402
from router.tuning import DEFAULT_SETTINGS  # noqa: E402

# Settings the components have too (components/mesh/tuning.py): they are switched on both sides.
COMPONENT_SETTINGS = ("tcp_nodelay", "large_messages_at_once")


@defer.inlineCallbacks
def measure(setting, on, args):
    """The ceiling flood and one pipeline step through a router with the setting on or off."""
    flags = ["--tuning", f"{setting}={'on' if on else 'off'}"] if setting in COMPONENT_SETTINGS else []
    router = RouterProcess(tempfile.mkdtemp(prefix="nerve-tuning-"), tuning={setting: on}).start()
    processes = []
    try:
        observer = yield join(router.rawsocket_url, "operator", "tuning-observer", router.ticket("operator", "tuning-observer"),
                              serializers=("msgpack",))
        flood = yield ceiling(router, observer, "simulator", "sim-ceiling", args.events)
        processes = [("orchestrator", ComponentProcess(router, "orchestrator", *flags))]
        processes += [(f"analyzer-{k}", ComponentProcess(router, "analyzer", "--authid", f"tuning-{k}", *flags)) for k in (1, 2)]
        yield wait_for_callees(observer, "nerve.analyze", 2)
        step = yield pipeline_step(router, observer, [(name, p.process) for name, p in processes], args.hosts, args.seconds,
                                   flags)
        stats = yield observer.call("nerve.stats")
        step["call"] = stats.get("call_time") or {}
        step["flood"] = flood
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
        for on in (True, False):
            step = yield measure(args.setting, on, args)
            rows.append((round_index + 1, on, step))
            print(f"  round {round_index + 1}, {args.setting} {'on' if on else 'off'}: ceiling {step['flood'][1]:,.0f} msg/s, "
                  f"pipeline p99 {step['p99']:.0f} ms, lag {step['lag']:.1f} s; {waves(step)}", flush=True)
    print(f"{machine_line()}; ceiling flood of {args.events:,} events; {args.hosts} simulated hosts at 1 Hz, 2 analyzers, "
          f"{args.seconds:.0f} s per pipeline row")
    print(f"{'round':>5} {args.setting:>17} {'flood ev/s':>10} {'flood msg/s':>11} {'flood CPU':>9} {'us/msg':>6} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'probe p99':>9} {'call p50':>8} {'call p99':>8} {'lost':>5} {'router msg/s':>12} "
          f"{'router CPU':>10} {'us/msg':>6} {'GC ms/s':>7} {'longest GC':>10}")
    for round_index, on, step in rows:
        delivered, flood_messages, flood_cpu, _ = step["flood"]
        print(f"{round_index:>5} {'on' if on else 'off':>17} {delivered:>10,.0f} {flood_messages:>11,.0f} {flood_cpu:>8.0f}% "
              f"{flood_cpu * 1e4 / flood_messages:>6.1f} {step['p50']:>7.0f} {step['p99']:>7.0f} {step['probe_p99']:>9.0f} "
              f"{step['call'].get('p50_ms', float('nan')):>8.0f} {step['call'].get('p99_ms', float('nan')):>8.0f} "
              f"{step['lost']:>5} {step['messages']:>12,.0f} {step['router_cpu']:>9.0f}% "
              f"{step['router_cpu'] * 1e4 / step['messages']:>6.1f} {step['gc']['router'][0]:>7.1f} "
              f"{step['gc']['router'][1]:>8.0f} ms")

    def best(on, pick, better=min):
        return better(pick(step) for _, setting, step in rows if setting is on)

    def flood_cost(step):
        return step["flood"][2] * 1e4 / step["flood"][1]

    print(f"summary: {args.setting}, best of {args.rounds}: ceiling on {best(True, lambda s: s['flood'][1], max):,.0f} / off "
          f"{best(False, lambda s: s['flood'][1], max):,.0f} router msg/s ({best(True, flood_cost):.1f} vs "
          f"{best(False, flood_cost):.1f} us of router CPU per message); pipeline at {args.hosts} hosts on p50 "
          f"{best(True, lambda s: s['p50']):.0f} / p99 {best(True, lambda s: s['p99']):.0f} ms, off p50 "
          f"{best(False, lambda s: s['p50']):.0f} / p99 {best(False, lambda s: s['p99']):.0f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", required=True, choices=sorted(DEFAULT_SETTINGS))
    parser.add_argument("--hosts", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--events", type=int, default=30000, help="events per ceiling flood")
    parser.add_argument("--rounds", type=int, default=2)
    task.react(main, (parser.parse_args(),))
