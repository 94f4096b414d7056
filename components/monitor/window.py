"""A host's recent samples, bounded in time, stored as values the garbage collector does not track.

The orchestrator keeps minutes of samples for every host (nerve.history, sparklines). Kept as
sample dicts, each holding its metrics dict, every one of them is a container the collector
tracks: with 4,000 hosts and a 300 s window a full collection walked 1.3 million objects and
stopped the process for about 1 s, and the process held 1.4 GB (bench/orchestrator_bench.py
--window-seconds 300). Here a sample is a tuple of plain values: (seq, ts, names, values), with
`names` a tuple shared by consecutive samples that carry the same metrics and `values` the
float64s packed little-endian in one bytes object (an array, unlike bytes, is a tracked
container). CPython stops tracking such a tuple after its first collections, so a full
collection only steps over them (0.1 s instead of 1 s in that bench), and the process holds a
third of the memory. The same tuple is a sample row of a packed nerve.analyze call (analysis.py).
"""

import itertools
import struct
from collections import deque


def row_values(names, values):
    """The floats a row's values bytes hold, one per name (little-endian float64: the row's wire form)."""
    return struct.unpack(f"<{len(names)}d", values)


def as_sample(row):
    """A (seq, ts, names, values) row, tuple or list, as the {seq, ts, metrics} dict it stands for."""
    seq, ts, names, values = row
    return {"seq": seq, "ts": ts, "metrics": dict(zip(names, row_values(names, values)))}


class SampleWindow:
    """The samples of one host, oldest first; metric values come back as floats."""

    __slots__ = ("entries", "names", "packer")

    def __init__(self, max_samples):
        self.entries = deque(maxlen=max_samples)
        self.names = ()
        self.packer = struct.Struct("0d")

    def __len__(self):
        return len(self.entries)

    def append(self, seq, ts, metrics):
        """Add a sample (metrics: a dict of metric name to number); returns its row."""
        names = tuple(metrics)
        if names != self.names:
            # Consecutive samples share one names tuple instead of holding copies.
            self.names, self.packer = names, struct.Struct(f"<{len(names)}d")
        row = (seq, ts, self.names, self.packer.pack(*metrics.values()))
        self.entries.append(row)
        return row

    def drop_before(self, ts):
        """Forget the samples older than ts (epoch seconds)."""
        entries = self.entries
        while entries and entries[0][1] < ts:
            entries.popleft()

    def samples(self, since=None):
        """The samples after `since` (epoch seconds; all when None) as {seq, ts, metrics} dicts, oldest first."""
        return [as_sample(row) for row in self.entries if since is None or row[1] > since]

    def latest_values(self, metric, count):
        """One metric's values in the newest `count` samples, oldest first (samples without it give none)."""
        values = []
        position, position_names = None, None
        for _, _, names, row in itertools.islice(reversed(self.entries), count):
            if names is not position_names:
                position_names = names
                position = names.index(metric) if metric in names else None
            if position is not None:
                values.append(struct.unpack_from("<d", row, 8 * position)[0])
        return values[::-1]
