"""The process's garbage collections, timed: while one runs, the process does nothing else.

A full collection walks every container the process holds; in a router worker or an
orchestrator it stops all routing or all analysis for that long, so it is part of latency.
"""

import gc
import time

pauses = {"count": 0, "seconds": 0.0, "max_seconds": 0.0}
# Objects frozen by freeze_startup_heap, counted once: gc.get_freeze_count() walks every frozen object
# (16 ms for a router worker's 156,000), which would stop all routing on every stats call.
frozen = [0]
_started = [0.0]


def _time_collection(phase, info):
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    pause = time.perf_counter() - _started[0]
    pauses["count"] += 1
    pauses["seconds"] += pause
    pauses["max_seconds"] = max(pauses["max_seconds"], pause)


def time_collections():
    """Start timing every garbage collection of this process (idempotent)."""
    if _time_collection not in gc.callbacks:
        gc.callbacks.append(_time_collection)


def freeze_startup_heap():
    """Keep every object that exists now out of future collections: start-up objects live as long as the process.

    Modules, classes and functions (64,000 objects in a component) are otherwise walked by every
    full collection, ~16 ms each time in the orchestrator, more in an analyzer with NumPy.
    """
    gc.freeze()
    frozen[0] = gc.get_freeze_count()


# CPython collects its youngest generation whenever 700 more container objects exist than at the last
# collection, and each collection walks all of them. A component under load creates objects faster than
# it frees them for a while (a batch of calls, a buffer of events), so that happened many times a second
# (docs/deviations.md has the measured cost).
CPYTHON_YOUNG_THRESHOLD = 700
YOUNG_THRESHOLD = 10_000


def set_young_threshold(threshold):
    """Collect the youngest generation after `threshold` new container objects (older generations as before)."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(threshold, middle, old)


def unfreeze_heap():
    """Let the collector walk the frozen objects again (undoes freeze_startup_heap)."""
    gc.unfreeze()
    frozen[0] = 0


def collection_stats():
    """Collections since timing started: how many, their total seconds, the longest one in seconds, objects frozen at
    start-up, and the collector's thresholds."""
    return dict(pauses, frozen=frozen[0], thresholds=list(gc.get_threshold()))
