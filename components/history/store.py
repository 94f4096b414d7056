"""The history store: one SQLite file (WAL) of packed blocks per host and tier, a journal of the last seconds.

Tables: `blocks` (tier, host, start, end, layout, samples, bytes, data) holds each host's samples of
a tier's block period packed by `codec`, in the order written (so pages fill up; an index finds a
host's); `layouts` the metric names a block's rows stand for; `hosts` the host ids; `journal` the
batches received since the oldest block still open (in memory), so a killed recorder loses at most
the second it had not committed; `meta` the format.

Coarse tiers are rolled up from the tier below once a block period is complete there; a query
for a coarse step rolls up, on the fly, what the tier below holds past the last stored block.
Nothing here deletes or rewrites a file it cannot read: `open_store` raises StoreError naming it.
"""

import json
import os
import sqlite3
import time
import zlib
from zlib import crc32

import msgpack
import numpy as np

from components.history.codec import pack_block, quantum_of, unpack_block
from components.history.tiers import DEFAULT_TIERS
from components.mesh.errors import NerveError

STORE_FILE = "history.sqlite3"
PAGE_SIZE = 65536  # takes effect when the file is created
FORMAT = "nerve-history-1"
TS_TOLERANCE = 0.001  # a sample within a millisecond of a host's last is that one again (stores keep ms)
FIRST_CAPACITY = 128  # samples an open block holds before it grows (a 2-minute block at 1 Hz)
MAX_UNWRITTEN_BYTES = 64 * 2**20  # closed blocks held in memory while the disk is full; older ones are dropped, counted
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS hosts (id INTEGER PRIMARY KEY, host_id TEXT UNIQUE NOT NULL, hostname TEXT);
CREATE TABLE IF NOT EXISTS layouts (id INTEGER PRIMARY KEY, names TEXT UNIQUE NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (id INTEGER PRIMARY KEY, tier INTEGER NOT NULL, host INTEGER NOT NULL,
    start REAL NOT NULL, end REAL NOT NULL, layout INTEGER NOT NULL, samples INTEGER NOT NULL, bytes INTEGER NOT NULL,
    data BLOB NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS blocks_by_host ON blocks (tier, host, start);
CREATE INDEX IF NOT EXISTS blocks_by_end ON blocks (tier, end);
CREATE TABLE IF NOT EXISTS journal (id INTEGER PRIMARY KEY, until REAL NOT NULL, data BLOB NOT NULL);
"""


class StoreError(NerveError):
    """The store's file cannot be read as a history store; it is left untouched."""

    uri = "nerve.error.unavailable"


def is_disk_full(error):
    """Whether an SQLite error says the disk (or the file system) has no room."""
    text = str(error).lower()
    return "full" in text or "no space" in text or getattr(error, "sqlite_errorcode", None) == 13


class OpenBlock:
    """One host's 1 s samples of the block period in progress: timestamps and a metrics × samples matrix."""

    __slots__ = ("start", "end", "count", "ts", "names", "rows", "values", "order_key", "order")

    def __init__(self, start, end):
        self.start, self.end, self.count = start, end, 0
        self.ts = np.empty(FIRST_CAPACITY)
        self.names, self.rows = [], {}
        self.values = np.full((0, FIRST_CAPACITY), np.nan)
        self.order_key, self.order = None, None  # the metric names as they last came, and their rows

    def append(self, ts, key, values):
        """Add one sample: `values` aligned with the metric names `key` (a tuple; None or NaN: no value)."""
        if self.count == self.ts.shape[0]:
            self.ts = np.concatenate([self.ts, np.empty(self.count)])
            self.values = np.concatenate([self.values, np.full(self.values.shape, np.nan)], axis=1)
        column = self.count
        self.ts[column] = ts
        if key != self.order_key:
            for name in key:
                if name not in self.rows:
                    self.rows[name] = len(self.names)
                    self.names.append(name)
                    self.values = np.concatenate([self.values, np.full((1, self.values.shape[1]), np.nan)])
            self.order_key, self.order = key, np.array([self.rows[name] for name in key], dtype=np.intp)
        # One assignment for the whole column; None becomes NaN (no value).
        self.values[self.order, column] = np.asarray(values, dtype=np.float64)
        self.count += 1

    def piece(self):
        """(ts, names, values) of what the block holds so far."""
        return self.ts[:self.count].copy(), list(self.names), self.values[:, :self.count].copy()


class HostState:
    """What the store knows of one host: its row id, the open block, and how far each tier is written."""

    __slots__ = ("id", "host_id", "hostname", "offset", "open", "last_ts", "written_until", "last_seen")

    def __init__(self, row_id, host_id, hostname, tiers):
        self.id, self.host_id, self.hostname = row_id, host_id, hostname
        # Block boundaries are shifted per host so that hosts do not all close their blocks in the same second.
        self.offset = crc32(host_id.encode()) % tiers[0].block
        self.open = None
        self.last_ts = float("-inf")
        self.written_until = [None] * len(tiers)  # per tier: end of the last stored block
        self.last_seen = 0.0


def _well_formed(stamps, metrics):
    """Whether a host entry's ts is a list of epoch seconds and its metrics lists of finite numbers or None, one per ts.

    Written as plain loops: it runs for every value the recorder receives."""
    if type(stamps) is not list or type(metrics) is not dict:
        return False
    count = len(stamps)
    try:
        for ts in stamps:
            if not 0 < ts < 1e11:
                return False
        for name, values in metrics.items():
            if type(values) is not list or len(values) != count or type(name) is not str:
                return False
            for value in values:
                if value is not None and not -1e300 < value < 1e300:  # also refuses NaN and infinities
                    return False
    except TypeError:  # a string or another non-number compared
        return False
    return True


def journal_blob(kept):
    """One journal row of {host_id: (positions, ts, metrics)}: per set of metric names, the samples as one packed
    block (a column per sample, `codec` quantised like the blocks) and the host id of each column."""
    groups = {}
    for host_id, (positions, stamps, metrics) in kept.items():
        if not metrics:
            continue
        hosts, times, columns = groups.setdefault(tuple(metrics), ([], [], []))
        for position in positions:
            hosts.append(host_id)
            times.append(stamps[position])
            columns.append([values[position] for values in metrics.values()])
    rows = [[list(names), zlib.compress(msgpack.packb(hosts), 1),
             pack_block(times, np.array(columns, dtype=np.float64).T, [quantum_of(name) for name in names], level=1)]
            for names, (hosts, times, columns) in groups.items()]
    return msgpack.packb(rows)


def merge(pieces):
    """One (ts, names, values) of several pieces in time order; a metric absent from a piece is NaN there."""
    pieces = [piece for piece in pieces if len(piece[0])]
    if not pieces:
        return np.empty(0), [], np.empty((0, 0))
    names = []
    for _, piece_names, _ in pieces:
        names.extend(name for name in piece_names if name not in names)
    index = {name: row for row, name in enumerate(names)}
    ts = np.concatenate([piece[0] for piece in pieces])
    values = np.full((len(names), len(ts)), np.nan)
    column = 0
    for piece_ts, piece_names, piece_values in pieces:
        rows = [index[name] for name in piece_names]
        values[rows, column:column + len(piece_ts)] = piece_values
        column += len(piece_ts)
    order = np.argsort(ts, kind="stable")
    return ts[order], names, values[:, order]


def rollup(ts, low, mean, high, step):
    """(step starts, min, mean, max) of values grouped by `step`-second buckets; NaN where a bucket has none."""
    if not len(ts):
        empty = np.empty((low.shape[0], 0))
        return np.empty(0), empty, empty, empty
    buckets = np.floor(ts / step) * step
    starts, first = np.unique(buckets, return_index=True)
    present = ~np.isnan(mean)
    counts = np.add.reduceat(present, first, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.add.reduceat(np.where(present, mean, 0.0), first, axis=1) / counts
    mins = np.minimum.reduceat(np.where(np.isnan(low), np.inf, low), first, axis=1)
    maxs = np.maximum.reduceat(np.where(np.isnan(high), -np.inf, high), first, axis=1)
    none = counts == 0
    for matrix in (means, mins, maxs):
        matrix[none] = np.nan
    return starts, mins, means, maxs


class HistoryStore:
    """Every host's samples in tiers, in one SQLite file under the data directory."""

    def __init__(self, connection, path, tiers=DEFAULT_TIERS, max_disk=None, clock=time.time):
        self.db, self.path, self.tiers, self.max_disk, self.clock = connection, path, tiers, max_disk, clock
        self.hosts = {}
        self.layouts, self.layout_names = {}, {}
        self.journal_batches = []  # batches received since the last commit, written with it
        self.unwritten = []  # closed blocks not yet in the file: (tier, host row id, start, end, names, blob, samples)
        self.bytes = [0] * len(tiers)
        self.samples = [0] * len(tiers)
        self.counts = {"lost_blocks": 0, "out_of_order": 0, "malformed": 0}
        self.renamed = set()  # hosts whose hostname changed since the last commit
        self.unwritten_bytes = 0

    # -- opening ------------------------------------------------------------------------
    def load(self):
        """Read hosts, layouts, tier sizes and replay the journal into open blocks."""
        db = self.db
        for row_id, names in db.execute("SELECT id, names FROM layouts"):
            self.layouts[tuple(json.loads(names))] = row_id
            self.layout_names[row_id] = json.loads(names)
        for row_id, host_id, hostname in db.execute("SELECT id, host_id, hostname FROM hosts"):
            self.hosts[host_id] = HostState(row_id, host_id, hostname, self.tiers)
        by_id = {host.id: host for host in self.hosts.values()}
        for tier, host, end in db.execute("SELECT tier, host, MAX(end) FROM blocks GROUP BY tier, host"):
            by_id[host].written_until[tier] = end
            if tier == 0:
                # A block holds ts < end, so a sample from end on is new: the journal's samples before end are
                # in the block already (one taken again would reopen the block and rewrite it with only that one).
                by_id[host].last_ts = end - TS_TOLERANCE
        for tier, total, samples in db.execute("SELECT tier, SUM(bytes), SUM(samples) FROM blocks GROUP BY tier"):
            self.bytes[tier], self.samples[tier] = total, samples
        replayed = 0
        for (data,) in db.execute("SELECT data FROM journal ORDER BY id"):
            replayed += self._replay(data)
        return replayed

    # -- writing ------------------------------------------------------------------------
    def host(self, host_id, hostname=None):
        """The state of a host, created (with its row) on first sight."""
        host = self.hosts.get(host_id)
        if host is None:
            # Its row is written with the next commit: a first second of 5,000 hosts is one transaction, not 5,000.
            host = self.hosts[host_id] = HostState(None, host_id, hostname or host_id, self.tiers)
        elif hostname and hostname != host.hostname:
            host.hostname = hostname
            self.renamed.add(host)
        return host

    def ingest(self, batch, journal=True):
        """Add {host_id: {hostname, ts: [...], metrics: {name: [...]}}} (nerve.samples host entries); samples at or
        before a host's last are skipped (duplicates, overlaps of a gap fill). Returns how many samples were taken."""
        taken, kept = 0, {}
        now = self.clock()
        for host_id, entry in batch.items():
            stamps, metrics = entry.get("ts"), entry.get("metrics")
            if not _well_formed(stamps, metrics):
                self.counts["malformed"] += 1
                continue
            host = self.host(host_id, entry.get("hostname"))
            host.last_seen = now
            key, columns = tuple(metrics), list(metrics.values())
            new = [position for position, ts in enumerate(stamps)
                   if self._take(host, ts, key, [column[position] for column in columns])]
            if new and journal:
                kept[host_id] = (new, stamps, metrics)
            taken += len(new)
        if kept:
            until = max(stamps[new[-1]] for new, stamps, _ in kept.values())
            self.journal_batches.append((until, journal_blob(kept)))
        return taken

    def _take(self, host, ts, key, values):
        """Put one sample in the host's open block (closing the one it passed); False if it is not newer than the
        host's last (a duplicate, or an overlap of a gap fill)."""
        if ts < host.last_ts + TS_TOLERANCE:
            self.counts["out_of_order"] += ts < host.last_ts - TS_TOLERANCE
            return False
        if host.open is not None and ts >= host.open.end:
            self._close(host)
        if host.open is None:
            block = self.tiers[0].block
            start = (ts - host.offset) // block * block + host.offset
            host.open = OpenBlock(start, start + block)
        host.open.append(ts, key, values)
        host.last_ts = ts
        return True

    def _replay(self, data):
        """Put a journal row's samples back into the open blocks; how many were taken."""
        taken = 0
        for names, hosts, blob in msgpack.unpackb(data):
            ts, values = unpack_block(blob, [quantum_of(name) for name in names])
            key, stamps = tuple(names), ts.tolist()
            for column, host_id in enumerate(msgpack.unpackb(zlib.decompress(hosts))):
                taken += self._take(self.host(host_id), stamps[column], key, values[:, column])
        return taken

    def _close(self, host):
        """Pack the host's open block and queue it for the next commit."""
        block, host.open = host.open, None
        ts, names, values = block.piece()
        if len(ts):
            self._queue_block(0, host, block.start, block.end, ts, names, values)

    def _queue_block(self, tier, host, start, end, ts, names, values):
        quanta = [quantum_of(name) for name in names] * (3 if self.tiers[tier].coarse else 1)
        self._hold(tier, host, start, end, names, pack_block(ts, values, quanta), int(np.count_nonzero(~np.isnan(values))))

    def _hold(self, tier, host, start, end, names, blob, samples):
        """Keep a packed block for the next commit (dropping the oldest held when over MAX_UNWRITTEN_BYTES)."""
        self.unwritten.append((tier, host, start, end, names, blob, samples))
        self.unwritten_bytes += len(blob)
        while self.unwritten_bytes > MAX_UNWRITTEN_BYTES:
            self.unwritten_bytes -= len(self.unwritten.pop(0)[5])
            self.counts["lost_blocks"] += 1

    def write_block(self, tier, host_id, start, end, ts, names, values):
        """Store one block directly (benches fill a long history this way); committed with the next commit."""
        self._queue_block(tier, self.host(host_id), start, end, ts, names, values)

    def write_packed_block(self, tier, host_id, start, end, names, blob, samples):
        """Store a blob `pack_block` made (for this tier's row layout of `names`) as one host's block."""
        self._hold(tier, self.host(host_id), start, end, list(names), blob, samples)

    def close_idle(self, idle_seconds=10.0):
        """Close the open blocks of hosts whose block period ended this long ago (they stopped reporting)."""
        now = self.clock()
        for host in self.hosts.values():
            if host.open is not None and host.open.end + idle_seconds < now:
                self._close(host)

    def commit(self):
        """Write the journal of the last batches and every closed block, drop journal rows no open block needs.

        Raises sqlite3.OperationalError (e.g. disk full) with nothing lost from memory: the next commit retries.
        """
        db = self.db
        new_hosts = [host for host in self.hosts.values() if host.id is None]
        new_layouts = []
        try:
            db.execute("BEGIN")
            for host in new_hosts:
                host.id = db.execute("INSERT INTO hosts (host_id, hostname) VALUES (?, ?)",
                                     (host.host_id, host.hostname)).lastrowid
            db.executemany("UPDATE hosts SET hostname = ? WHERE id = ?",
                           [(host.hostname, host.id) for host in self.renamed if host.id is not None])
            db.executemany("INSERT INTO journal (until, data) VALUES (?, ?)", self.journal_batches)
            written = self._insert_blocks(self.unwritten, new_layouts)
            open_starts = [host.open.start for host in self.hosts.values() if host.open is not None]
            db.execute("DELETE FROM journal WHERE until < ?", (min(open_starts, default=float("inf")),))
            db.execute("COMMIT")
        except sqlite3.Error:
            if db.in_transaction:
                db.execute("ROLLBACK")
            for host in new_hosts:
                host.id = None
            for names in new_layouts:
                self.layout_names.pop(self.layouts.pop(names), None)
            # Batches whose samples all sit in closed blocks are kept by those blocks; the journal needs the rest only.
            floor = min((host.open.start for host in self.hosts.values() if host.open is not None), default=float("inf"))
            self.journal_batches = [batch for batch in self.journal_batches if batch[0] >= floor]
            raise
        self.renamed.clear()
        self._written(written)
        self.journal_batches, self.unwritten, self.unwritten_bytes = [], [], 0

    def _insert_blocks(self, blocks, new_layouts):
        rows, written = [], []
        for tier, host, start, end, names, blob, samples in blocks:
            rows.append((tier, host.id, start, end, self._layout(names, new_layouts), samples, len(blob), blob))
            written.append((tier, host, end, len(blob), samples))
        self.db.executemany("INSERT OR REPLACE INTO blocks (tier, host, start, end, layout, samples, bytes, data) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        return written

    def _written(self, written):
        for tier, host, end, size, samples in written:
            self.bytes[tier] += size
            self.samples[tier] += samples
            host.written_until[tier] = max(host.written_until[tier] or end, end)

    def _layout(self, names, new_layouts):
        key = tuple(names)
        row_id = self.layouts.get(key)
        if row_id is None:
            cursor = self.db.execute("INSERT INTO layouts (names) VALUES (?)", (json.dumps(names),))
            row_id = self.layouts[key] = cursor.lastrowid
            new_layouts.append(key)
            self.layout_names[row_id] = list(names)
        return row_id

    # -- rollups and retention ----------------------------------------------------------
    def roll_up(self, limit=200):
        """Roll complete block periods of each coarse tier up from the tier below (at most `limit` blocks a call)."""
        now, made = self.clock(), 0
        for tier_index in range(1, len(self.tiers)):
            tier, below = self.tiers[tier_index], tier_index - 1
            for host in self.hosts.values():
                source_end = host.written_until[below]
                if source_end is None:
                    continue
                if host.open is None and below == 0 and host.last_seen < now - 60:
                    source_end = max(source_end, now - 60)  # a host that stopped: its last period is complete
                done = host.written_until[tier_index]
                start = done
                if start is None:
                    first = self._first_start(host, below)
                    start = None if first is None else first // tier.block * tier.block
                    host.written_until[tier_index] = start  # rolled up to here: the first period starts there
                while start is not None and start + tier.block <= source_end and made < limit:
                    ts, names, low, mean, high = self._tier_range(host, below, start, start + tier.block, stored=True)
                    if len(ts):
                        starts, mins, means, maxs = rollup(ts, low, mean, high, tier.step)
                        self._queue_block(tier_index, host, start, start + tier.block, starts, names,
                                          np.concatenate([mins, means, maxs]))
                        made += 1
                    host.written_until[tier_index] = start = start + tier.block
        return made

    def _first_start(self, host, tier):
        starts = [start for t, owner, start, *_ in self.unwritten if t == tier and owner is host]
        if host.id is not None:
            starts += [row[0] for row in self.db.execute("SELECT MIN(start) FROM blocks WHERE tier = ? AND host = ?",
                                                         (tier, host.id)) if row[0] is not None]
        return min(starts, default=None)

    def enforce_retention(self):
        """Delete blocks older than each tier keeps, then the oldest of any tier over its share of --max-disk."""
        now, deleted = self.clock(), 0
        for index, tier in enumerate(self.tiers):
            deleted += self._delete_where(index, "end < ?", (now - tier.keep,))
            if self.max_disk is not None:
                excess = self.bytes[index] - self.max_disk * tier.share
                if excess > 0:
                    cutoff = None
                    for end, size in self.db.execute("SELECT end, bytes FROM blocks WHERE tier = ? ORDER BY end", (index,)):
                        cutoff, excess = end, excess - size
                        if excess <= 0:
                            break
                    deleted += self._delete_where(index, "end <= ?", (cutoff,)) if cutoff is not None else 0
        return deleted

    def _delete_where(self, tier, condition, args):
        size, samples, count = self.db.execute(
            f"SELECT COALESCE(SUM(bytes), 0), COALESCE(SUM(samples), 0), COUNT(*) FROM blocks WHERE tier = ? AND {condition}",
            (tier, *args)).fetchone()
        if count:
            with self.db:
                self.db.execute(f"DELETE FROM blocks WHERE tier = ? AND {condition}", (tier, *args))
            self.bytes[tier] -= size
            self.samples[tier] -= samples
        return count

    # -- reading ------------------------------------------------------------------------
    def _stored_pieces(self, host, tier, since, until):
        quanta_cache, pieces = {}, []
        coarse = self.tiers[tier].coarse
        rows = [] if host.id is None else self.db.execute(
            "SELECT layout, data FROM blocks WHERE tier = ? AND host = ? AND start <= ? AND end > ? ORDER BY start",
            (tier, host.id, until, since)).fetchall()
        blocks = [(self.layout_names[layout], data) for layout, data in rows]
        blocks += [(names, blob) for t, owner, start, end, names, blob, _ in self.unwritten
                   if t == tier and owner is host and start <= until and end > since]
        for names, blob in blocks:
            quanta = quanta_cache.get(id(names))
            if quanta is None:
                quanta = quanta_cache[id(names)] = [quantum_of(name) for name in names] * (3 if coarse else 1)
            ts, values = unpack_block(blob, quanta)
            pieces.append((ts, names, values))
        return pieces

    def _tier_range(self, host, tier, since, until, stored=False):
        """(ts, names, min, mean, max) of a tier for since <= ts < until; past its last stored block (unless
        `stored`), the tier below rolled up on the fly, or for the finest tier the open block."""
        pieces = self._stored_pieces(host, tier, since, until)
        if tier == 0:
            if not stored and host.open is not None:
                pieces.append(host.open.piece())
            ts, names, values = merge(pieces)
            keep = (ts >= since) & (ts < until)
            values = values[:, keep]
            return ts[keep], names, values, values, values
        split = [_split_coarse(piece) for piece in pieces]
        ts, names, low = merge([(piece[0], piece[1], piece[2]) for piece in split])
        _, _, mean = merge([(piece[0], piece[1], piece[3]) for piece in split])
        _, _, high = merge([(piece[0], piece[1], piece[4]) for piece in split])
        written = host.written_until[tier]
        tail_from = max(since, written if written is not None else since)
        if not stored and tail_from < until:
            step = self.tiers[tier].step
            tail_from = tail_from // step * step
            fine = self._tier_range(host, tier - 1, tail_from, until)
            starts, mins, means, maxs = rollup(fine[0], fine[2], fine[3], fine[4], step)
            keep = ts < tail_from
            ts, names, low, mean, high = _concat((ts[keep], names, low[:, keep], mean[:, keep], high[:, keep]),
                                                 (starts, fine[1], mins, means, maxs))
        keep = (ts >= since - self.tiers[tier].step) & (ts < until)
        return ts[keep], names, low[:, keep], mean[:, keep], high[:, keep]

    def range(self, host_id, since, until, tier):
        """A host's points of one tier between since and until: {step, ts, series[, min, max]} as plain lists."""
        host = self.hosts[host_id]
        step = self.tiers[tier].step
        # A coarse step is read whole: the last one covers until's whole step, as its stored rollup does.
        end = until + 1e-6 if step == 1 else (until // step + 1) * step
        ts, names, low, mean, high = self._tier_range(host, tier, since, end)
        if step > 1:
            keep = ts >= since // step * step
            ts, low, mean, high = ts[keep], low[:, keep], mean[:, keep], high[:, keep]
        answer = {"host_id": host_id, "hostname": host.hostname, "step": step, "ts": ts.tolist(),
                  "series": _series(names, mean)}
        if step > 1:
            answer["min"], answer["max"] = _series(names, low), _series(names, high)
        return answer

    # -- numbers ------------------------------------------------------------------------
    def stats(self):
        """Samples and bytes stored per tier, hosts, open blocks, journal size, counters."""
        journal = self.db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0) FROM journal").fetchone()
        return {"hosts": len(self.hosts), "samples": sum(self.samples[:1]),
                "tiers": {tier.name: {"step": tier.step, "keep_seconds": tier.keep, "bytes": self.bytes[index],
                                      "samples": self.samples[index]} for index, tier in enumerate(self.tiers)},
                "open_samples": sum(host.open.count for host in self.hosts.values() if host.open is not None),
                "journal": {"rows": journal[0], "bytes": journal[1]}, "unwritten_blocks": len(self.unwritten),
                "file_bytes": _file_bytes(self.path), **self.counts}

    def close(self):
        """Close the connection (open blocks stay in the journal for the next start)."""
        self.db.close()


def _split_coarse(piece):
    ts, names, values = piece
    m = len(names)
    return ts, names, values[:m], values[m:2 * m], values[2 * m:]


def _concat(first, second):
    ts1, names1, *mats1 = first
    ts2, names2, *mats2 = second
    out = [merge([(ts1, names1, a), (ts2, names2, b)]) for a, b in zip(mats1, mats2)]
    return (out[0][0], out[0][1], *(piece[2] for piece in out))


def _series(names, matrix):
    """{name: [value or None]} of a names × points matrix (NaN becomes None, values rounded to 6 digits)."""
    rounded = np.round(matrix, 6).astype(object)
    rounded[np.isnan(matrix)] = None
    return dict(zip(names, rounded.tolist()))


def _file_bytes(path):
    return sum(os.path.getsize(f"{path}{suffix}") for suffix in ("", "-wal") if os.path.exists(f"{path}{suffix}"))


def open_store(data_dir, tiers=DEFAULT_TIERS, max_disk=None, clock=time.time):
    """The store in data_dir (created if missing); StoreError naming the file if it cannot be read as one."""
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, STORE_FILE)
    existed = os.path.exists(path) and os.path.getsize(path) > 0
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        if existed:
            header = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if header is None or header[0] != FORMAT:
                db.close()
                raise StoreError(f"{path} is not a nerve history store (format {header[0] if header else 'missing'!r}, "
                                 f"expected {FORMAT!r}); it is left untouched: move it away or point --data-dir elsewhere")
        # Large pages hold many 2-4 KB blocks each; at 4 KB a block spills into an overflow page half empty.
        db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('format', ?)", (FORMAT,))
        store = HistoryStore(db, path, tiers, max_disk, clock)
        store.load()
    except (sqlite3.DatabaseError, ValueError, KeyError, zlib.error, msgpack.ExtraData) as error:
        raise StoreError(f"cannot read the history store {path}: {error}; it is left untouched: move it away (or "
                         f"restore a copy) and start the recorder again") from error
    return store
