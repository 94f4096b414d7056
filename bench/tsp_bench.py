"""TSP compute-mesh figures in one run: moves per second with 1 then 2 compute instances (same solve), and the
quality of seeded solves (gap to the published optimum) for berlin52 at 10 s and kroA100 at 30 s on 2 instances.

    .venv/bin/python bench/tsp_bench.py [--scaling-budget 10] [--runs 10] [--skip-quality] [--skip-scaling]

Everything runs on this machine against a real router on a free port, with real `nerve solver` and
`nerve compute` processes; prints tables and a summary line.
"""

import argparse
import os
import statistics
import sys
import time

import psutil
from twisted.internet import defer, task

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from components.testing.live import ComponentProcess, RouterProcess, join, sleep, wait_for_callees  # noqa: E402
from components.tsp.core import load_tsplib  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "data")
ANNEAL = "nerve.tsp.anneal"


@defer.inlineCallbacks
def set_instances(router, session, instances, count):
    """Start or stop compute instances until `count` serve nerve.tsp.anneal."""
    while len(instances) < count:
        instances.append(ComponentProcess(router, "compute", "--authid", f"bench-compute-{len(instances) + 1}"))
    while len(instances) > count:
        instances.pop().stop()
    yield wait_for_callees(session, ANNEAL, count, timeout=60)


@defer.inlineCallbacks
def solve(session, problem, budget, seed):
    """One nerve.tsp.solve; returns its result with the wall time seen by the caller."""
    began = time.monotonic()
    result = yield session.call("nerve.tsp.solve", cities=problem.cities, budget=budget, seed=seed)
    result["wall"] = time.monotonic() - began
    result["gap"] = 100.0 * (result["length"] - problem.optimum) / problem.optimum
    return result


@defer.inlineCallbacks
def wait_for_quiet(limit, idle_wanted=85.0):
    """Wait (at most limit seconds) until the machine is mostly idle, so others' jobs don't take our cores."""
    deadline = time.monotonic() + limit
    while True:
        psutil.cpu_percent()
        yield sleep(2.0)
        idle = 100.0 - psutil.cpu_percent()
        if idle >= idle_wanted or time.monotonic() >= deadline:
            return idle


def cpu_seconds(processes):
    """User + system CPU seconds used so far by each process."""
    return [sum(psutil.Process(process.process.pid).cpu_times()[:2]) for process in processes]


@defer.inlineCallbacks
def scaling(router, session, instances, budget, quiet_wait, repeats):
    """Moves per second across instances with 1 and then 2 instances on the same solve (kroA100, same seed).

    The pair is measured `repeats` times, alternating; the best of each count is compared, as the
    run least disturbed by other jobs on the shared machine.
    """
    problem = load_tsplib(os.path.join(DATA, "kroA100.tsp"))
    rows = []
    for repeat in range(repeats):
        for count in (1, 2):
            yield set_instances(router, session, instances, count)
            idle = yield wait_for_quiet(quiet_wait)
            before = cpu_seconds(instances)
            psutil.cpu_percent()
            result = yield solve(session, problem, budget, seed=1)
            busy = psutil.cpu_percent()
            used = [after - earlier for after, earlier in zip(cpu_seconds(instances), before)]
            # The share of a core each instance got: below ~100 % something else (other jobs, router, solver) took it.
            shares = [seconds / result["wall"] * 100 for seconds in used]
            rate = result["moves"] / result["seconds"]
            rows.append((count, result, rate, busy, idle, shares, result["moves"] / sum(used)))
    print(f"\n## scaling: kroA100, budget {budget:g} s, same seed; moves/s = all instances' moves / solve time")
    print(f"{'instances':>9} {'idle before':>11} {'rounds':>6} {'moves':>12} {'moves/s':>12} {'per inst.':>12} "
          f"{'machine cpu':>11} {'core share per instance':>24} {'moves/cpu-s':>12}")
    for count, result, rate, busy, idle, shares, per_cpu in rows:
        print(f"{count:>9} {idle:>10.0f}% {result['rounds']:>6} {result['moves']:>12,} {rate:>12,.0f} {rate / count:>12,.0f} "
              f"{busy:>10.0f}% {' '.join(f'{share:.0f}%' for share in shares):>24} {per_cpu:>12,.0f}")
    best = {count: max(row[2] for row in rows if row[0] == count) for count in (1, 2)}
    return best[2] / best[1]


@defer.inlineCallbacks
def quality(router, session, instances, name, budget, runs):
    """Gaps of `runs` seeded solves of one instance file on 2 compute instances."""
    problem = load_tsplib(os.path.join(DATA, f"{name}.tsp"))
    yield set_instances(router, session, instances, 2)
    results = []
    print(f"\n## quality: {name} (optimum {problem.optimum}), budget {budget:g} s, 2 instances")
    print(f"{'seed':>4} {'length':>7} {'gap %':>6} {'rounds':>6} {'M moves':>8} {'wall s':>6}")
    for seed in range(1, runs + 1):
        result = yield solve(session, problem, budget, seed)
        results.append(result)
        print(f"{seed:>4} {result['length']:>7} {result['gap']:>6.2f} {result['rounds']:>6} {result['moves'] / 1e6:>8.1f} "
              f"{result['wall']:>6.1f}", flush=True)
    gaps = sorted(result["gap"] for result in results)
    optimal = sum(1 for result in results if result["length"] == problem.optimum)
    print(f"{name}: optimum in {optimal}/{runs}; gap % min {gaps[0]:.2f} median {statistics.median(gaps):.2f} "
          f"max {gaps[-1]:.2f}; within 2 %: {sum(gap <= 2 for gap in gaps)}/{runs}")
    return gaps, optimal


@defer.inlineCallbacks
def main(reactor, options):
    router = RouterProcess().start()
    instances = []
    solver = ComponentProcess(router, "solver", "--authid", "bench-solver", "--log-level", "warn")
    summary = []
    try:
        session = yield join(router.websocket_url)  # anonymous, as the dashboard: may call solve and the meta API
        yield wait_for_callees(session, "nerve.tsp.solve", 1, timeout=60)
        print(f"machine: {psutil.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
        if not options.skip_scaling:
            ratio = yield scaling(router, session, instances, options.scaling_budget, options.quiet_wait,
                                  options.repeats)
            summary.append(f"2 instances = {ratio:.2f}x the moves/s of 1 (best of {options.repeats} each)")
        if not options.skip_quality:
            for name, budget in (("berlin52", 10.0), ("kroA100", 30.0)):
                gaps, optimal = yield quality(router, session, instances, name, budget, options.runs)
                summary.append(f"{name} {budget:g} s: optimum {optimal}/{len(gaps)}, median gap "
                               f"{statistics.median(gaps):.2f} %, max {gaps[-1]:.2f} %")
        yield session.leave()
    finally:
        for process in instances + [solver]:
            process.stop()
        router.stop()
    print(f"\nload average {os.getloadavg()[0]:.2f} at end")
    print("summary: " + "; ".join(summary))


def parse_args():
    """The bench's options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scaling-budget", type=float, default=10.0, help="seconds of each scaling solve")
    parser.add_argument("--quiet-wait", type=float, default=120.0,
                        help="seconds to wait at most for an idle machine before each scaling solve")
    parser.add_argument("--repeats", type=int, default=2, help="times the 1-then-2 instance pair is measured")
    parser.add_argument("--runs", type=int, default=10, help="seeded solves per quality instance")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-scaling", action="store_true")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    task.react(lambda reactor: main(reactor, arguments))
