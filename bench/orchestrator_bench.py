"""The orchestrator's own CPU per measurement, as plain code; with --baseline, against a git revision in one run.

    .venv/bin/python bench/orchestrator_bench.py [--hosts 5000] [--seconds 10] [--baseline REV] [--rounds 3]

Method: no router and no sockets (pipeline_bench measures those). The Orchestrator class of a
source tree is driven as the runner drives it, on a fake clock: every simulated second each of
--hosts hosts (SimulatedHosts, the simulator's 15 metrics, spread over 20 slots like the
simulator) goes through on_measure; dispatch runs after the batch delay; every nerve.analyze
call is answered 30 ms later with a canned compact result per host (made once by analyze_batch,
so analysis is not timed); publish_digest runs every 0.25 s; nobody watches a host, so no
per-host analysis events (the default with no host detail open). The figure is the process CPU time
(time.process_time) of all that, per measurement; the measurements are generated before each
second's timed span. With --baseline the same runs on REV's orchestrator (a temporary git
worktree) and on this checkout, alternating for --rounds rounds, each in a fresh process; the
best round of each is compared.
"""

import argparse
import json
import os
import subprocess
import sys
import time

from trees import add_tree_arguments, best_of_trees, source_trees

SLOTS = 20
CALL_SECONDS = 0.03


def measure(hosts, seconds):
    """{"us_per_measurement", "calls", "published"} for the orchestrator importable as `components`."""
    from twisted.internet import defer, task

    from components.analysis import analyze_batch
    from components.config import MeshConfig
    from components.orchestrator import Orchestrator, OrchestratorConfig
    from components.tracker import SimulatedHosts

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

        def publish(self, topic, payload, **options):
            self.published += 1

        def call(self, uri, batch, **options):
            self.calls += 1
            answer = defer.Deferred()
            result = {"analyzer": "bench", "hosts": [answers[entry["host_id"]] for entry in batch]}
            clock.callLater(CALL_SECONDS, answer.callback, result)
            return answer

    mesh = CannedMesh()
    orchestrator = Orchestrator(OrchestratorConfig(mesh=MeshConfig(role="orchestrator")), mesh, clock=clock.seconds,
                                scheduler=clock)
    orchestrator.active = True
    orchestrator.interest.loaded = True  # as after joining: the meta API said nobody watches a host
    step = 1.0 / SLOTS
    cpu = 0.0
    for second in range(seconds):
        start = clock.seconds()
        events = [[] for _ in range(SLOTS)]
        for index, host_id in enumerate(simulated.host_ids):
            slot = index % SLOTS
            events[slot].append({"host_id": host_id, "hostname": host_id, "run": "bench", "seq": second + 1,
                                 "ts": start + slot * step, "interval": 1.0, "metrics": simulated.sample(index, second)})
        began = time.process_time()
        for slot in range(SLOTS):
            for event in events[slot]:
                orchestrator.on_measure(event)
            clock.advance(step)
            if slot % (SLOTS // 4) == SLOTS // 4 - 1:
                orchestrator.publish_digest()
        cpu += time.process_time() - began
    return {"us_per_measurement": cpu / (hosts * seconds) * 1e6, "calls": mesh.calls, "published": mesh.published,
            "analysed": orchestrator.stats["analysed"]}


def run_in(source, args):
    """Measure in a fresh process with `source` first on sys.path; returns its figures."""
    output = subprocess.run([sys.executable, os.path.abspath(__file__), "--source", source, "--hosts", str(args.hosts),
                             "--seconds", str(args.seconds)], capture_output=True, text=True, check=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def main(args):
    if args.source:
        sys.path.insert(0, args.source)
        print(json.dumps(measure(args.hosts, args.seconds)))
        return
    from common import machine_line  # noqa: E402 (not in the --source child: it imports this checkout)

    rows = []
    with source_trees(args.baseline) as trees:
        for round_index in range(args.rounds):
            for name, source in trees:
                figures = run_in(source, args)
                rows.append((round_index + 1, name, figures))
                print(f"  round {round_index + 1}, {name}: {figures['us_per_measurement']:.1f} us per measurement", flush=True)
    print(f"{machine_line()}; {args.hosts} hosts x {args.seconds} s on a fake clock, calls answered after "
          f"{CALL_SECONDS * 1000:.0f} ms, digest every 0.25 s")
    print(f"{'round':>5} {'orchestrator':<16} {'us/measurement':>14} {'calls':>7} {'published':>9} {'analysed':>9}")
    for round_index, name, figures in rows:
        print(f"{round_index:>5} {name:<16} {figures['us_per_measurement']:>14.1f} {figures['calls']:>7} "
              f"{figures['published']:>9} {figures['analysed']:>9}")
    summary = best_of_trees(trees, [(name, figures["us_per_measurement"]) for _, name, figures in rows], args.baseline,
                            lambda value: f"{value:.1f} us")
    print(f"summary: orchestrator CPU per measurement at {args.hosts} hosts, best of {args.rounds}: {summary}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_tree_arguments(parser, "orchestrator", hosts=5000, seconds=10, rounds=3)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    main(parser.parse_args())
