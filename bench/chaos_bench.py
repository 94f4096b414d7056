"""Chaos soak: a whole `nerve up` mesh under a fault every 20-40 s, healed by its supervisor, counted from outside.

    .venv/bin/python bench/chaos_bench.py [--minutes 10] [--hosts 1000] [--seed 0] [--gap 20,40]
        [--kinds kill-analyzer,kill-orchestrator,kill-router,stop-analyzer] [--warmup 75] [--window 60]

`nerve up --hosts H --analyzers 2 --orchestrators 2` (an active orchestrator and a hot standby) on a free port;
after `--warmup` seconds, `--minutes` of faults, one every `--gap` seconds (seeded by `--seed`): every kind once in
a seeded order, then at random from `--kinds` (components/testing/chaos.py FAULT_KINDS: SIGKILL an analyzer,
SIGKILL the active orchestrator, SIGKILL the router, SIGSTOP an analyzer for 10 s). The supervisor restarts what
dies; the standby takes over; nothing here repairs anything.

An operator session outside the mesh counts every (host, seq) analysed from nerve.orchestrator.analysed and every
alert; it passes when
- every seq the active orchestrator received by the end (nerve.snapshot) was analysed, without a hole from the
  first the observer saw (lost 0), and no alert came twice for one (host, metric, seq);
- after each fault the rolling 1 s p99 of measurement -> analysis (the analysed event's arrival minus the sample's
  ts) is under 1 s within 5 s (3 s for analyzer faults) and stays so until the next fault;
- the router worker's and the active orchestrator's RSS at the end are within 20 % of theirs after the warm-up
  (the orchestrators run with --window `--window` s, shorter than the warm-up, so their windows are full by then).
It prints a row per fault (time into the phase, kind, target, recovery, bound, the worst rolling p99, ok), the
totals, and `summary: pass` or `summary: fail: <why>` last. tests/test_chaos.py runs a short one.
"""

import argparse
import tempfile

from twisted.internet import defer, task

from common import machine_line  # noqa: E402  (puts the project on sys.path)
from components.testing.chaos import FAULT_KINDS, ChaosSettings, report, run_chaos  # noqa: E402


@defer.inlineCallbacks
def main(reactor, args):
    settings = ChaosSettings(hosts=args.hosts, seconds=args.minutes * 60, seed=args.seed, gap=tuple(args.gap),
                             kinds=tuple(args.kinds), warmup=args.warmup, window=args.window)
    print(f"{machine_line()}; {args.hosts} hosts, {args.minutes:g} minutes of faults every {args.gap[0]:g}-"
          f"{args.gap[1]:g} s, seed {args.seed}", flush=True)
    result = yield run_chaos(settings, say=lambda line: print(line, flush=True),
                             workdir=tempfile.mkdtemp(prefix="nerve-chaos-"))
    for line in report(result):
        print(line)


def kinds(text):
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in FAULT_KINDS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"kinds are some of {', '.join(FAULT_KINDS)}; got {text!r}")
    return names


def gap(text):
    low, _, high = text.partition(",")
    values = (float(low), float(high or low))
    if not 5 <= values[0] <= values[1]:
        raise argparse.ArgumentTypeError(f"--gap is MIN,MAX seconds with 5 <= MIN <= MAX, got {text!r}")
    return values


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes of faults after the warm-up")
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gap", type=gap, default=(20.0, 40.0), help="MIN,MAX seconds between faults")
    parser.add_argument("--kinds", type=kinds, default=list(FAULT_KINDS), help="comma-separated fault kinds")
    parser.add_argument("--warmup", type=float, default=75.0, help="seconds before the first memory reading")
    parser.add_argument("--window", type=float, default=60.0, help="the orchestrators' --window (seconds)")
    task.react(main, (parser.parse_args(),))
