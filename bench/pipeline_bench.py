"""Ceiling vs pipeline, in one run: how close the full mesh gets to what the router alone can route.

    .venv/bin/python bench/pipeline_bench.py [--hosts 500,1000,1500,2000,3000] [--seconds 20] [--dashboards 2]
        [--variant NAME=ORCHESTRATOR_ARGS[//SIMULATOR_ARGS[//ANALYZER_ARGS]] ...] [--baseline REV]

1. Ceiling: through one router started with the project's config, one publisher floods ~80-byte
   events to one subscriber (RawSocket + msgpack, as backend components connect); first with a
   static prefix permission (the simulator role), then as a tracker, whose every publish the
   router checks with the per-host authorizer. Router messages per second (received + sent, from
   the router's own counters, nerve.router.stats) and the router worker's CPU.
2. Pipeline: an orchestrator, `--analyzers` analyzers and `--dashboards` headless Chromium pages
   on the overview; then a simulator of H hosts at 1 Hz for each H of `--hosts`, `--seconds` each
   after an 8 s warm-up, until p99 measurement-to-analysis exceeds 1 s, a measurement is lost or
   a backlog remains. Per step: loss (sequence gaps the orchestrator counted), measurement-to-
   analysis p50/p99 over every host and the whole step (the orchestrator's own histogram of
   measurement ts to result, read before and after the step: each figure is the upper edge of its
   bucket, e.g. "≤ 500 ms"; a --baseline orchestrator without the histogram gives percentiles over
   its last 10,000 results instead, about the step's last 2 s, marked *), the same latency seen
   by a subscriber of 20 hosts' analysis events (as open host details), router messages/s and
   CPU, the CPU of every process, and the time the router worker and the orchestrator spent in
   garbage collections (ms per second; neither does anything else meanwhile) with the longest
   such pause since each started, the probe's worst latency in each 10 s of the step (when the
   lateness came), and the share of both cores' time the hypervisor stole, for the step, per 10 s
   and during each ceiling flood (on a shared VM it comes in bursts of 13-25 % that no process's
   own CPU shows).
Each `--variant` (default: one, the defaults) runs the whole ladder with its own orchestrator,
simulator and analyzer arguments, so optimisations are compared in one run, e.g. `--variant
"before=--analysis-events all --analysis-wire full --tick 1 // --aligned"` or `--variant
"two-slots=////--concurrency 2"`; `--baseline REV` first runs
the ladder with the orchestrator, analyzers and simulator of git revision REV (a temporary
worktree; the router is this checkout's). The summary gives hosts sustained, the ratio of the router's
message rate at that load to the ceiling, and the router's messages per CPU second in the
pipeline against the flood's (how well the pipeline spends the router, whatever else the machine
runs). The flood's publisher and subscriber share one process, which on a slow VM can fall short of
saturating the router worker; so the ceiling is also given router-bound (its messages/s scaled to
100 % of the worker's core) and every ratio is given against both, the router-bound one being the
stricter. Without `--dashboards 0` the two Chromium pages share the machine with the pipeline.
"""

import argparse
import math
import tempfile
import time

import psutil

from twisted.internet import defer, task

from common import (CpuMeter, OutsideMeter, busy_share, flood, histogram_percentile, machine_line,  # noqa: E402
                    open_dashboards, percentile, router_rates, stolen_share)
from components.mesh.config import uri_safe  # noqa: E402
from components.testing.live import ComponentProcess, RouterProcess, join, sleep, wait_for_callees  # noqa: E402
from trees import source_trees  # noqa: E402

PROBES = 20
WARM_UP = 8.0


@defer.inlineCallbacks
def ceiling(router, observer, role, authid, events):
    """(delivered events/s, router messages/s, router CPU %, share stolen) for one publisher flooding one subscriber."""
    publisher = yield join(router.rawsocket_url, role, authid, router.ticket(role, authid), serializers=("msgpack",))
    subscriber = yield join(router.rawsocket_url, "orchestrator", f"{authid}-sub", router.ticket("orchestrator", f"{authid}-sub"),
                            serializers=("msgpack",))
    before = yield observer.call("nerve.router.stats")
    machine_before = psutil.cpu_times()
    delivered = yield flood(publisher, subscriber, f"nerve.measure.{authid}", events)
    machine_after = psutil.cpu_times()
    after = yield observer.call("nerve.router.stats")
    yield publisher.leave()
    yield subscriber.leave()
    messages, cpu = router_rates(before, after)
    return delivered, messages, cpu, stolen_share(machine_before, machine_after)


@defer.inlineCallbacks
def pipeline_step(router, observer, processes, hosts, seconds, simulator_args, source=None):
    """Run H simulated hosts (the simulator from the source tree at `source`, or this one); returns the step's figures."""
    latencies, deliveries, arrivals, machine_samples = [], [], [], []
    # One probe per stride, each in another of the simulator's 20 slots: hosts of one slot measure at one instant.
    probes = [f"sim-{index + k:04d}" for k, index in enumerate(range(0, hosts, max(1, hosts // PROBES)))][:PROBES]
    recording = [False]

    def on_analysis(analysis):
        if recording[0]:
            now = time.time()
            latencies.append(now - analysis["ts"])
            arrivals.append(now)
            deliveries.append(now - analysis["analyzed_at"])  # from the orchestrator holding the result to here

    subscriptions = []
    for host_id in probes:
        subscription = yield observer.subscribe(on_analysis, f"nerve.analysis.{host_id}")
        subscriptions.append(subscription)
    simulator = ComponentProcess(router, "tracker", "--hosts", str(hosts), "--interval", "1", "--authid", f"sim-{hosts}",
                                 *simulator_args, source=source)
    try:
        yield sleep(WARM_UP)
        meters = [CpuMeter("router", router.process.pid)] + [CpuMeter(name, p.pid) for name, p in processes]
        meters.append(CpuMeter("simulator", simulator.process.pid))
        for meter in meters:
            meter.begin()
        machine_before, outside = psutil.cpu_times(), OutsideMeter()
        machine_times = task.LoopingCall(lambda: machine_samples.append(psutil.cpu_times()))
        machine_times.start(1.0)
        stats_before = yield observer.call("nerve.stats")
        router_before = yield observer.call("nerve.router.stats")
        recording[0] = True
        yield sleep(seconds)
        recording[0] = False
        machine_times.stop()
        router_after = yield observer.call("nerve.router.stats")
        stats_after = yield observer.call("nerve.stats")
        usage = {meter.name: meter.end() for meter in meters}
        machine_after, outside_share = psutil.cpu_times(), outside.share()
    finally:
        simulator.stop()
        for subscription in subscriptions:
            yield subscription.unsubscribe()
    messages, router_cpu = router_rates(router_before, router_after)
    wall = router_after["now"] - router_before["now"]
    collections = {name: (1000 * (after.get("gc", {}).get("seconds", 0) - before.get("gc", {}).get("seconds", 0)) / wall,
                          1000 * after.get("gc", {}).get("max_seconds", float("nan")))
                   for name, before, after in (("router", router_before, router_after), ("orchestrator", stats_before, stats_after))}
    # Over the whole step and every host when the orchestrator counts a histogram; older ones (a --baseline)
    # only give percentiles over their last 10,000 results, about the step's last 2 s.
    latency = stats_after.get("analysis_latency") or {}
    histograms = stats_before.get("analysis_latency_histogram"), stats_after.get("analysis_latency_histogram")
    whole_step = bool(histograms[0] and histograms[1])
    if whole_step:
        latency = {"p50_ms": histogram_percentile(*histograms, 0.5), "p99_ms": histogram_percentile(*histograms, 0.99)}
    # When the lateness came: the probe's worst latency per 10 s of the step (waves of backlog vs a steady queue).
    # The hypervisor's share per 10 s beside it: on a shared VM, stolen time makes waves no process shows.
    worst = [0.0] * max(1, math.ceil(seconds / 10))
    for now, late in zip(arrivals, latencies):
        bucket = min(int((now - arrivals[0]) // 10), len(worst) - 1)
        worst[bucket] = max(worst[bucket], late)
    stolen = [stolen_share(machine_samples[k], machine_samples[min(k + 10, len(machine_samples) - 1)])
              for k in range(0, max(1, len(machine_samples) - 1), 10)]
    return {"hosts": hosts, "received": stats_after["received"] - stats_before["received"],
            "lost": stats_after.get("gaps", 0) - stats_before.get("gaps", 0), "lag": stats_after.get("lag_seconds", 0.0),
            "p50": latency.get("p50_ms", float("nan")), "p99": latency.get("p99_ms", float("nan")), "whole_step": whole_step,
            "probe_p50": percentile(latencies, 0.5) * 1000, "probe_p99": percentile(latencies, 0.99) * 1000,
            "delivery_p50": percentile(deliveries, 0.5) * 1000, "delivery_p99": percentile(deliveries, 0.99) * 1000,
            "messages": messages, "router_cpu": router_cpu, "usage": usage, "gc": collections, "worst_by_10s": worst,
            "stolen_by_10s": stolen, "stolen": stolen_share(machine_before, machine_after), "per_host": messages / hosts,
            "machine_busy": busy_share(machine_before, machine_after), "outside": outside_share}


def waves(step):
    """When a step's lateness came, and how much of the machine the hypervisor took meanwhile, per 10 s."""
    return ("probe's worst per 10 s: " + " ".join(f"{late:.1f}" for late in step["worst_by_10s"])
            + "; stolen per 10 s: " + " ".join(f"{share:.0%}" for share in step["stolen_by_10s"]))


def sustained(step, seconds):
    """No loss, p99 at the orchestrator and at the probe subscriber within 1 s, no backlog, and every host offered."""
    return (not step["lost"] and step["p99"] <= 1000 and step["probe_p99"] <= 1000 and step["lag"] <= 2
            and step["received"] >= 0.98 * step["hosts"] * seconds)


@defer.inlineCallbacks
def run_variant(router, observer, name, component_args, source, args, dashboards):
    """The host ladder with one configuration ((orchestrator, simulator, analyzer) arguments) and the components of
    one source tree; returns the steps."""
    orchestrator_args, simulator_args, analyzer_args = component_args
    processes = [("orchestrator", ComponentProcess(router, "orchestrator", *orchestrator_args, source=source))]
    processes += [(f"analyzer-{k + 1}", ComponentProcess(router, "analyzer", "--authid", uri_safe(f"{name}-analyzer-{k + 1}"),
                                                         *analyzer_args, source=source))
                  for k in range(args.analyzers)]
    steps = []
    try:
        yield wait_for_callees(observer, "nerve.analyze", args.analyzers)
        yield sleep(2)
        for hosts in args.hosts:
            step = yield pipeline_step(router, observer, [(n, p.process) for n, p in processes] + dashboards, hosts,
                                       args.seconds, simulator_args, source)
            steps.append(step)
            print(f"  [{name}] {hosts} hosts: lost {step['lost']}, p99 {step['p99']:.0f} ms, lag {step['lag']} s, "
                  f"router {step['messages']:,.0f} msg/s; orchestrator to subscriber p50/p99 {step['delivery_p50']:.0f}/"
                  f"{step['delivery_p99']:.0f} ms; longest collection: router {step['gc']['router'][1]:.0f} ms, "
                  f"orchestrator {step['gc']['orchestrator'][1]:.0f} ms; {waves(step)}", flush=True)
            if not sustained(step, args.seconds):
                break
            yield sleep(3)  # the previous simulator's hosts go stale; let the digest settle
    finally:
        for _, process in processes:
            process.stop()
    return steps


@defer.inlineCallbacks
def main(reactor, args):
    router = RouterProcess(tempfile.mkdtemp(prefix="nerve-pipeline-")).start()
    dashboards = []
    results = {}
    try:
        observer = yield join(router.rawsocket_url, "operator", "pipeline-observer",
                              router.ticket("operator", "pipeline-observer"), serializers=("msgpack",))
        static = yield ceiling(router, observer, "simulator", "sim-ceiling", args.events)
        per_host_auth = yield ceiling(router, observer, "tracker", "ceiling-host", args.events)
        dashboards = open_dashboards(router.http_url, args.dashboards, 24 * 3600)
        yield sleep(5)
        pages = [(f"dashboard-{k + 1}", page) for k, page in enumerate(dashboards)]
        with source_trees(args.baseline) as trees:
            variants = [(name, ([], [], []), source) for name, source in trees[:-1]]  # the baseline, if any, first
            variants += [(name, component_args, None) for name, *component_args in args.variant]
            for name, component_args, source in variants:
                results[name] = yield run_variant(router, observer, name, component_args, source, args, pages)
        yield observer.leave()
    finally:
        for dashboard in dashboards:
            dashboard.terminate()
        router.stop()

    print(f"{machine_line()}; {args.analyzers} analyzers, {args.dashboards} Chromium dashboards, {args.seconds} s per step")
    bound = static[1] * 100 / static[2]  # what the flood would move with the router worker's core saturated
    print(f"ceiling, static permission:  {static[0]:,.0f} events/s delivered, {static[1]:,.0f} router msg/s, "
          f"router worker {static[2]:.0f} % CPU (router-bound: {bound:,.0f} msg/s), {static[3]:.0%} stolen")
    print(f"ceiling, tracker authorizer: {per_host_auth[0]:,.0f} events/s delivered, {per_host_auth[1]:,.0f} router msg/s, "
          f"router worker {per_host_auth[2]:.0f} % CPU, {per_host_auth[3]:.0%} stolen")
    header = (f"{'variant':<10} {'hosts':>6} {'recv/s':>7} {'lost':>5} {'p50 ms':>7} {'p99 ms':>7} {'probe p50':>9} "
              f"{'probe p99':>9} {'lag s':>6} {'router msg/s':>12} {'msg/host/s':>10} {'vs ceiling':>10} {'vs bound':>8} "
              f"{'router CPU':>10} {'GC ms/s r/o':>11} {'machine':>7} {'stolen':>6} {'outside':>7}  busiest")
    print(header)
    summary = []
    for name, steps in results.items():
        best = None
        for step in steps:
            others = sorted(((n, u[0]) for n, u in step["usage"].items() if n != "router"), key=lambda item: -item[1])
            scope = " " if step["whole_step"] else "*"
            print(f"{name:<10} {step['hosts']:>6} {step['received'] / args.seconds:>7.0f} {step['lost']:>5} {step['p50']:>6.0f}{scope} "
                  f"{step['p99']:>6.0f}{scope} {step['probe_p50']:>9.0f} {step['probe_p99']:>9.0f} {step['lag']:>6.1f} "
                  f"{step['messages']:>12,.0f} {step['per_host']:>10.2f} {step['messages'] / static[1]:>10.0%} "
                  f"{step['messages'] / bound:>8.0%} "
                  f"{step['router_cpu']:>9.0f}% {step['gc']['router'][0]:>5.0f}/{step['gc']['orchestrator'][0]:<5.0f} "
                  f"{step['machine_busy']:>7.0%} {step['stolen']:>6.0%} {step['outside']:>6.0f}%  "
                  + ", ".join(f"{n} {c:.0f}%" for n, c in others[:3]))
            if sustained(step, args.seconds):
                best = step
        if best:
            top = max(steps, key=lambda step: step["messages"])
            # Messages per router CPU second against the flood's: how well the pipeline spends the router itself.
            efficiency = (best["messages"] / best["router_cpu"]) / (static[1] / static[2])
            summary.append(f"{name}: {best['hosts']} hosts sustained (p99 {best['p99']:.0f} ms, loss 0), router "
                           f"{best['messages']:,.0f} msg/s = {best['messages'] / static[1]:.0%} of the ceiling "
                           f"{static[1]:,.0f} msg/s ({best['messages'] / bound:.0%} of the router-bound {bound:,.0f}), "
                           f"{best['per_host']:.2f} msg per host per s, {efficiency:.0%} of the "
                           f"flood's messages per router CPU second; most reached {top['messages'] / static[1]:.0%} at "
                           f"{top['hosts']} hosts with the machine {top['machine_busy']:.0%} busy")
        else:
            summary.append(f"{name}: no step sustained")
    if not all(step["whole_step"] for steps in results.values() for step in steps):
        print("* p50/p99 over the orchestrator's last 10,000 results only (a version without the latency histogram)")
    print("summary: " + "; ".join(summary))


def parse_variant(text):
    """NAME=ORCHESTRATOR_ARGS[//SIMULATOR_ARGS[//ANALYZER_ARGS]] -> (name, [orchestrator], [simulator], [analyzer] args)."""
    name, _, rest = text.partition("=")
    if not name:
        raise argparse.ArgumentTypeError(f"expected NAME=ORCHESTRATOR_ARGS[//SIMULATOR_ARGS[//ANALYZER_ARGS]], got {text!r}")
    parts = rest.split("//", 2)
    orchestrator_args, simulator_args, analyzer_args = parts + [""] * (3 - len(parts))
    return name, orchestrator_args.split(), simulator_args.split(), analyzer_args.split()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=lambda text: [int(h) for h in text.split(",")], default=[500, 1000, 1500, 2000, 3000])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--events", type=int, default=30000, help="events per ceiling flood")
    parser.add_argument("--analyzers", type=int, default=2)
    parser.add_argument("--dashboards", type=int, default=2)
    parser.add_argument("--variant", type=parse_variant, action="append",
                        help="NAME=ORCHESTRATOR_ARGS[//SIMULATOR_ARGS[//ANALYZER_ARGS]] (repeatable)")
    parser.add_argument("--baseline", help="a git revision whose components to run the ladder with first")
    parsed = parser.parse_args()
    parsed.variant = parsed.variant or [("default", [], [], [])]
    task.react(main, (parsed,))
