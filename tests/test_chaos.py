"""The mesh heals itself: a short chaos soak of a whole `nerve up` (bench/chaos_bench.py runs the 10-minute one).

1,000 simulated hosts at 1 Hz, two analyzers, an active and a standby orchestrator, the alert keeper, a notifier
paging a webhook and the recorder, all under `nerve up`; after a 15 s warm-up, 130 s with a fault every 17-18 s: each
of the six kinds once (SIGKILL an analyzer, the active orchestrator, the router, the notifier, the recorder; SIGSTOP an
analyzer for 10 s), in a seeded order. The supervisor and the standby heal; components/testing/chaos.py only injects
and counts, from an operator session outside the mesh. About 180 s.

Shorter than the bench in two ways, each said where it is asserted: the orchestrators keep a 10 s window (the
bench: 60 s) so memory is read with full windows after the short warm-up, and the faults come every 17-18 s
instead of 20-40 s so that all six fit (each fault is still judged only until the next one).
"""

import pytest_twisted

from components.testing.chaos import FAULT_KINDS, ChaosSettings, report, run_chaos

SETTINGS = ChaosSettings(hosts=1000, seconds=130.0, seed=1, gap=(17.0, 18.0), warmup=15.0, window=10.0)


@pytest_twisted.inlineCallbacks
def test_a_mesh_under_faults_loses_nothing_alerts_once_recovers_within_bounds_and_keeps_its_memory(tmp_path):
    lines = []
    result = yield run_chaos(SETTINGS, say=lines.append, workdir=tmp_path)
    lines += report(result)
    print("\n".join(lines))
    shown = "\n".join(lines)
    assert not result.errors, shown
    assert sorted(fault.kind for fault in result.faults) == sorted(FAULT_KINDS), shown

    # Counted from outside: every (host, seq) the active orchestrator received was analysed; no alert twice.
    assert result.published >= SETTINGS.hosts * 100, f"too little was checked\n{shown}"
    assert result.lost == 0, f"{result.lost} (host, seq) never analysed, e.g. {result.lost_examples[:5]}\n{shown}"
    assert result.unobserved == 0, f"{result.unobserved} (host, seq) analysed while the observer was away\n{shown}"
    assert result.duplicate_alerts == 0, f"alerted twice: {result.duplicate_examples[:5]}\n{shown}"

    # Every alert change the keeper published reached the webhook, once; every measurement handed over was recorded.
    assert result.notified_alerts > 0 and not result.unnotified, f"never notified: {result.unnotified[:5]}\n{shown}"
    assert not result.duplicate_notifications, f"notified twice: {result.duplicate_notifications[:5]}\n{shown}"
    assert result.recorded_checked >= SETTINGS.hosts * 60 and result.unrecorded == 0, shown

    # Back to p99 < 1 s within 5 s of each fault (3 s for analyzer faults), and staying so until the next one.
    late = [f"{fault.kind}: {'never' if fault.recovery is None else f'{fault.recovery:.1f} s'} (bound {fault.bound:g} s)"
            for fault in result.faults if not fault.ok]
    assert not late, "recovery over its bound: " + "; ".join(late) + f"\n{shown}"

    # Memory: the bench's bound, +20 % from after the warm-up to the end; here with 10 s windows, full after 15 s.
    for name, reading in result.memory.items():
        start, end = reading["start"], reading["end"]
        assert end[1] <= start[1] * (1 + SETTINGS.memory_margin), (
            f"{name}: {start[1]:.0f} -> {end[1]:.0f} MB over a {SETTINGS.seconds:g} s run (bound "
            f"+{SETTINGS.memory_margin:.0%}, as the bench's 10 minutes)\n{shown}")
    assert all(state == "running" for state in result.states.values()), shown
    assert not result.failures(), shown
