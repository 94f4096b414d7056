"""The orchestrator's own CPU per measurement, as plain code; with --baseline, against a git revision in one run.

    .venv/bin/python bench/orchestrator_bench.py [--hosts 5000] [--seconds 10] [--baseline REV] [--rounds 3]
        [--window-seconds 300 [--outage]]

Method: no router and no sockets (pipeline_bench measures those). The Orchestrator class of a
source tree is driven as the runner drives it, on a fake clock: every simulated second each of
--hosts hosts (SimulatedHosts, the simulator's 15 metrics, spread over 20 slots like the
simulator) goes through on_measure; dispatch runs after the batch delay; every nerve.analyze
call is answered 30 ms later with a canned compact result per host (made once by analyze_batch,
so analysis is not timed; packed when the call came packed, the canned analyzer's own CPU
subtracted); publish_digest runs every 0.25 s; nobody watches a host, so no per-host analysis
events (the default with no host detail open). The figure is the process CPU time
(time.process_time) of all that, per measurement; the measurements are generated before each
second's timed span. With --baseline the same runs on REV's orchestrator (a temporary git
worktree) and on this checkout, alternating for --rounds rounds, each in a fresh process; the
best round of each is compared.

With --window-seconds W the hosts then go on (untimed) until every window holds W seconds of
samples, as in a long-running orchestrator (the default window is 300 s), and the figures add what
full windows cost: the objects the garbage collector tracks, one full collection (gc.collect(),
best of 3; the process stops for that long whenever Python runs one) and the process's RSS.
With --outage the analyzers are away while the windows fill (the orchestrator is not connected),
so every host also holds those W seconds as pending work (at most max_pending, 600 samples), as
after an analyzer outage of W seconds; the figures then add the samples held.
"""

import argparse
import gc
import json
import os
import subprocess
import sys
import time

from trees import add_tree_arguments, best_of_trees, source_trees

SLOTS = 20
CALL_SECONDS = 0.03


def measure(hosts, seconds, window_seconds=0, outage=False):
    """{"us_per_measurement", "calls", "published", ...} for the orchestrator importable as `components`."""
    import msgpack
    import psutil
    from twisted.internet import defer, task

    from components.monitor.analysis import analyze_batch

    try:
        from components.monitor.analysis import pack_results  # what the tree's analyzer answers packed calls with
    except ImportError:
        pack_results = msgpack.packb
    from components.mesh.config import MeshConfig
    from components.monitor.orchestrator import Orchestrator, OrchestratorConfig
    from components.monitor.tracker import SimulatedHosts

    clock = task.Clock()
    clock.advance(1_800_000_000)
    simulated = SimulatedHosts(hosts)
    first = {"seq": 1, "ts": clock.seconds(), "metrics": simulated.sample(0, 0.0)}
    canned = analyze_batch([{"host_id": "canned", "state": None, "samples": [first]}], compact=True)[0]
    canned["changes"] = []  # the first sample sets the levels; steady hosts report no change
    answers = {host_id: dict(canned, host_id=host_id) for host_id in simulated.host_ids}

    class CannedMesh:
        connected = True
        calls = published = 0
        own_cpu = 0.0  # the canned analyzer's unpacking and packing, which is not the orchestrator's

        def publish(self, topic, payload, **options):
            self.published += 1

        def call(self, uri, batch, **options):
            began = time.process_time()
            self.calls += 1
            answer = defer.Deferred()
            packed = isinstance(batch, bytes)
            hosts = [answers[entry["host_id"]] for entry in (msgpack.unpackb(batch) if packed else batch)]
            result = {"analyzer": "bench", "hosts": pack_results(hosts) if packed else hosts}
            clock.callLater(CALL_SECONDS, answer.callback, result)
            self.own_cpu += time.process_time() - began
            return answer

    mesh = CannedMesh()
    orchestrator = Orchestrator(OrchestratorConfig(mesh=MeshConfig(role="orchestrator")), mesh, clock=clock.seconds,
                                scheduler=clock)
    orchestrator.active = True
    orchestrator.interest.loaded = True  # as after joining: the meta API said nobody watches a host
    step = 1.0 / SLOTS

    def run_second(second):
        start = clock.seconds()
        events = [[] for _ in range(SLOTS)]
        for index, host_id in enumerate(simulated.host_ids):
            slot = index % SLOTS
            events[slot].append({"host_id": host_id, "hostname": host_id, "run": "bench", "seq": second + 1,
                                 "ts": start + slot * step, "interval": 1.0, "metrics": simulated.sample(index, second)})
        began, canned_before = time.process_time(), mesh.own_cpu
        for slot in range(SLOTS):
            for event in events[slot]:
                orchestrator.on_measure(event)
            clock.advance(step)
            if slot % (SLOTS // 4) == SLOTS // 4 - 1:
                orchestrator.publish_digest()
        return time.process_time() - began - (mesh.own_cpu - canned_before)

    cpu = sum(run_second(second) for second in range(seconds))
    figures = {"us_per_measurement": cpu / (hosts * seconds) * 1e6, "calls": mesh.calls, "published": mesh.published,
               "analysed": orchestrator.stats["analysed"]}
    if window_seconds:
        mesh.connected = not outage  # the orchestrator holds the work until analyzers are back
        for second in range(seconds, window_seconds + 1):
            run_second(second)
        pauses = []
        for _ in range(3):
            began = time.perf_counter()
            gc.collect()
            pauses.append(time.perf_counter() - began)
        figures.update(tracked=len(gc.get_objects()), full_gc_ms=min(pauses) * 1000,
                       rss_mb=psutil.Process().memory_info().rss / 2**20,
                       pending=sum(len(host.pending) for host in orchestrator.hosts.values()))
    return figures


def run_in(source, args):
    """Measure in a fresh process with `source` first on sys.path; returns its figures."""
    output = subprocess.run([sys.executable, os.path.abspath(__file__), "--source", source, "--hosts", str(args.hosts),
                             "--seconds", str(args.seconds), "--window-seconds", str(args.window_seconds)]
                            + (["--outage"] if args.outage else []),
                            capture_output=True, text=True, check=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def main(args):
    if args.source:
        sys.path.insert(0, args.source)
        print(json.dumps(measure(args.hosts, args.seconds, args.window_seconds, args.outage)))
        return
    from common import machine_line  # noqa: E402 (not in the --source child: it imports this checkout)

    rows = []
    with source_trees(args.baseline) as trees:
        for round_index in range(args.rounds):
            for name, source in trees:
                figures = run_in(source, args)
                rows.append((round_index + 1, name, figures))
                print(f"  round {round_index + 1}, {name}: {figures['us_per_measurement']:.1f} us per measurement"
                      + (f", full windows: {figures['full_gc_ms']:.0f} ms full collection" if args.window_seconds else ""),
                      flush=True)
    print(f"{machine_line()}; {args.hosts} hosts x {args.seconds} s on a fake clock, calls answered after "
          f"{CALL_SECONDS * 1000:.0f} ms, digest every 0.25 s")
    windows = f" {'tracked':>10} {'full GC ms':>10} {'RSS MB':>7} {'pending':>9}" if args.window_seconds else ""
    print(f"{'round':>5} {'orchestrator':<16} {'us/measurement':>14} {'calls':>7} {'published':>9} {'analysed':>9}{windows}")
    for round_index, name, figures in rows:
        windows = (f" {figures['tracked']:>10,} {figures['full_gc_ms']:>10.0f} {figures['rss_mb']:>7.0f} "
                   f"{figures.get('pending', 0):>9,}"
                   if args.window_seconds else "")
        print(f"{round_index:>5} {name:<16} {figures['us_per_measurement']:>14.1f} {figures['calls']:>7} "
              f"{figures['published']:>9} {figures['analysed']:>9}{windows}")
    summary = best_of_trees(trees, [(name, figures["us_per_measurement"]) for _, name, figures in rows], args.baseline,
                            lambda value: f"{value:.1f} us")
    if args.window_seconds:
        pauses = best_of_trees(trees, [(name, figures["full_gc_ms"]) for _, name, figures in rows], None,
                               lambda value: f"{value:.0f} ms")
        summary += f"; one full collection with {args.window_seconds} s windows, best of {args.rounds}: {pauses}"
    print(f"summary: orchestrator CPU per measurement at {args.hosts} hosts, best of {args.rounds}: {summary}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_tree_arguments(parser, "orchestrator", hosts=5000, seconds=10, rounds=3)
    parser.add_argument("--window-seconds", type=int, default=0,
                        help="then fill every window to this many seconds and measure a full collection and RSS")
    parser.add_argument("--outage", action="store_true", help="with --window-seconds: no analyzer while the windows fill")
    parser.add_argument("--source", help=argparse.SUPPRESS)
    main(parser.parse_args())
