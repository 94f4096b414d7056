"""The history store, SQLite (packed blocks, what `nerve recorder` uses) against DuckDB (a row per sample), on
issue 19's numbers.

    .venv/bin/python bench/history_bench.py [--engines sqlite,duckdb] [--ingest-hosts 5000] [--ingest-seconds 150]
        [--size-hosts 200] [--size-seconds 1920] [--query-hosts 1000] [--queries 100]

Each engine runs in its own child process (so memory is its own), in three parts, on simulated hosts
(`SimulatedHosts`, 14 metrics, noisy: a worst case for compression) and a simulated clock:
- size: `--size-hosts` hosts for `--size-seconds` s at 1 Hz, every block closed; bytes of the file (WAL
  checkpointed) per sample of the 1 s tier (a sample: one metric of one host at one second). Also the CPU of the
  1 min rollups of that span, per host-hour (SQLite rolls up in blocks every 30 min).
- ingest: `--ingest-hosts` hosts at 1 Hz for `--ingest-seconds` s, as nerve.samples events of 1,000 hosts
  (MessagePack-decoded in the loop, as the recorder's transport does): CPU seconds per simulated second (% of one
  core), and the process's RSS at the end (SQLite: the real Recorder object, committing each second).
- query: `--query-hosts` hosts with 1 h of 1 s data, 2 days of 1 min and 30 days of 1 h written directly into the
  store, then `--queries` rounds of: one second of ingest for every host, committed, then one query of each kind for
  a random host (1 h at 1 s, 24 h at 1 min, 30 d at 1 h); p50/p99 wall time of each kind.
CPU seconds, bytes and RSS do not depend on the machine's load; wall times do (the machine is shared), so the query
targets are checked on each query's CPU time (a query runs on one thread; DuckDB's worker threads count too).
Targets: <= 2 bytes/sample, < 25 % of a core at 5,000 hosts, p99 < 100 ms, < 300 MB at 5,000 hosts.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

import msgpack
import numpy as np
import psutil

from common import PROJECT, percentile  # noqa: E402 (puts the project on sys.path)
from components.history.codec import pack_block, quantum_of  # noqa: E402
from components.monitor.tracker import SimulatedHosts  # noqa: E402

T0 = 1_800_000_000.0
CHUNK = 1000
TARGETS = {"bytes_per_sample": 2.0, "ingest_cpu_percent": 25.0, "rss_mb": 300.0, "p99_ms": 100.0}
QUERIES = (("1h@1s", 3600, 1), ("24h@1m", 86400, 60), ("30d@1h", 30 * 86400, 3600))


def host_ids(count):
    return [f"sim-{index:04d}" for index in range(count)]


class Feed:
    """One nerve.samples host entry per host per simulated second, from SimulatedHosts."""

    def __init__(self, count, seed=1):
        self.hosts = SimulatedHosts(count, seed=seed)
        self.ids = host_ids(count)
        self.names = self.hosts.names

    def second(self, ts):
        """{host_id: entry} for one second (each host measured a little after ts, as spread trackers are)."""
        readings = self.hosts.sample_many(slice(0, len(self.ids)), ts)
        return {host_id: {"hostname": host_id, "run": "bench", "seq": [int(ts)], "ts": [ts + (index % 100) / 100],
                          "metrics": {name: [value] for name, value in reading.items()}}
                for index, (host_id, reading) in enumerate(zip(self.ids, readings))}

    def payloads(self, ts):
        """The second as nerve.samples events of CHUNK hosts."""
        entries = list(self.second(ts).items())
        chunks = [dict(entries[start:start + CHUNK]) for start in range(0, len(entries), CHUNK)]
        return [{"ts": ts + 1, "orchestrator": "bench", "chunk": index, "chunks": len(chunks), "hosts": hosts}
                for index, hosts in enumerate(chunks)]

    def events(self, ts):
        """The second as MessagePack-encoded nerve.samples events."""
        return [msgpack.packb(payload) for payload in self.payloads(ts)]


# -- SQLite: the recorder's own store ------------------------------------------------------------------
class SqliteEngine:
    """The recorder (components/history) driven with plain calls on a simulated clock."""

    name = "sqlite"

    def __init__(self, directory, max_disk=10**12):
        from components.history.recorder import Recorder, RecorderConfig
        from components.history.store import open_store
        from components.mesh.config import MeshConfig
        from components.testing import FakeMesh

        self.now = T0
        clock = lambda: self.now  # noqa: E731
        self.config = RecorderConfig(mesh=MeshConfig(role="recorder"), data_dir=directory, max_disk=max_disk)
        self.store = open_store(directory, self.config.tiers, max_disk, clock=clock)
        self.recorder = Recorder(self.config, FakeMesh(self.config).mesh, self.store, clock=clock)
        self.recorder.state = "recording"

    def ingest_events(self, events):
        for data in events:
            self.recorder.on_samples(msgpack.unpackb(data))

    def ingest_entries(self, entries):
        self.store.ingest(entries)

    def commit(self):
        self.recorder.commit()

    def finish(self):
        """Close every open block, roll up and write everything; the file's bytes with the WAL checkpointed."""
        self.now += 3600
        self.store.close_idle(idle_seconds=0)
        self.store.commit()
        while self.store.roll_up(limit=100_000):
            self.store.commit()
        self.store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.payload = self.store.bytes[0]
        # Free pages (the journal's, emptied as blocks close) stay in the file and are reused by later writes.
        pages, free, size = (self.store.db.execute(f"PRAGMA {name}").fetchone()[0]
                             for name in ("page_count", "freelist_count", "page_size"))
        self.file_bytes = os.path.getsize(self.store.path)
        return (pages - free) * size, self.store.samples[0]

    def rollup_cpu(self):
        started = time.process_time()
        self.store.roll_up(limit=10**9)
        self.store.commit()
        return time.process_time() - started

    def fill(self, ids, names, now):
        """1 h of 1 s blocks, 2 days of 1 min and 30 days of 1 h for every host, packed once, written per host."""
        rng = np.random.default_rng(2)
        plans = []
        for tier, step, block, seconds in ((0, 1, 120, 3600), (1, 60, 1800, 2 * 86400), (2, 3600, 86400, 30 * 86400)):
            first = (now - seconds) // block * block
            for start in np.arange(first, now - block + 1, block):
                ts = start + np.arange(0, block, step)
                mean = rng.uniform(0, 100, (len(names), len(ts))).round(2)
                values = mean if tier == 0 else np.concatenate([mean - 5, mean, mean + 5])
                quanta = [quantum_of(name) for name in names] * (1 if tier == 0 else 3)
                plans.append((tier, start, start + block, pack_block(ts, values, quanta), values.size))
        for host_id in ids:
            for tier, start, end, blob, samples in plans:
                self.store.write_packed_block(tier, host_id, float(start), float(end), names, blob, samples)
            if len(self.store.unwritten) > 5_000:  # well under what the store holds unwritten
                self.store.commit()
        self.store.commit()

    def query(self, host_id, seconds, step):
        return self.recorder.history_range(host_id, self.now - seconds, self.now, step)


# -- DuckDB: one row per sample, rollup tables beside --------------------------------------------------
class DuckdbEngine:
    """DuckDB with a table per tier: (host, metric, ts, value) at 1 s, (host, metric, ts, min, mean, max) coarser."""

    name = "duckdb"

    def __init__(self, directory):
        import duckdb

        self.path = os.path.join(directory, "history.duckdb")
        self.db = duckdb.connect(self.path)
        self.db.execute("CREATE TABLE s1 (host USMALLINT, metric UTINYINT, ts BIGINT, value DOUBLE)")
        for table in ("m1", "h1"):
            self.db.execute(f"CREATE TABLE {table} (host USMALLINT, metric UTINYINT, ts BIGINT, low DOUBLE, mean DOUBLE, "
                            "high DOUBLE)")
        self.hosts, self.metrics, self.now = {}, {}, T0
        self.pending = []

    def _ids(self, host_id, name):
        return (self.hosts.setdefault(host_id, len(self.hosts)), self.metrics.setdefault(name, len(self.metrics)))

    def ingest_entries(self, entries):
        hosts, metrics, stamps, values = [], [], [], []
        for host_id, entry in entries.items():
            for name, column in entry["metrics"].items():
                host, metric = self._ids(host_id, name)
                for ts, value in zip(entry["ts"], column):
                    if value is not None:
                        hosts.append(host)
                        metrics.append(metric)
                        stamps.append(int(ts * 1000))
                        values.append(value)
        self.pending.append({"host": np.array(hosts, dtype=np.uint16), "metric": np.array(metrics, dtype=np.uint8),
                             "ts": np.array(stamps, dtype=np.int64), "value": np.array(values)})

    def ingest_events(self, events):
        for data in events:
            self.ingest_entries(msgpack.unpackb(data)["hosts"])

    def commit(self):
        if not self.pending:
            return
        columns = {key: np.concatenate([part[key] for part in self.pending]) for key in self.pending[0]}  # noqa: F841
        self.db.execute("INSERT INTO s1 SELECT * FROM columns")
        self.pending = []

    def finish(self):
        self.commit()
        self.db.execute("CHECKPOINT")
        samples = self.db.execute("SELECT COUNT(*) FROM s1").fetchone()[0]
        size = sum(os.path.getsize(self.path + suffix) for suffix in ("", ".wal") if os.path.exists(self.path + suffix))
        return size, samples

    def rollup_cpu(self):
        started = time.process_time()
        self.db.execute("INSERT INTO m1 SELECT host, metric, ts // 60000 * 60000, MIN(value), AVG(value), MAX(value) "
                        "FROM s1 GROUP BY ALL")
        self.db.execute("CHECKPOINT")
        return time.process_time() - started

    def fill(self, ids, names, now):
        rng = np.random.default_rng(2)
        for name in names:
            self._ids(ids[0], name)
        for table, step, seconds in (("s1", 1, 3600), ("m1", 60, 2 * 86400), ("h1", 3600, 30 * 86400)):
            stamps = np.arange(now - seconds, now, step)
            for start in range(0, len(ids), 100):
                group = range(start, min(start + 100, len(ids)))
                size = len(group) * len(names) * len(stamps)
                host = np.repeat(np.array([self._ids(ids[index], names[0])[0] for index in group], dtype=np.uint16),
                                 len(names) * len(stamps))
                metric = np.tile(np.repeat(np.arange(len(names), dtype=np.uint8), len(stamps)), len(group))
                ts = np.tile((stamps * 1000).astype(np.int64), len(group) * len(names))
                mean = rng.uniform(0, 100, size).round(2)
                columns = {"host": host, "metric": metric, "ts": ts, "value": mean}  # noqa: F841
                if table == "s1":
                    self.db.execute("INSERT INTO s1 SELECT * FROM columns")
                else:
                    columns.update(low=mean - 5, high=mean + 5)
                    self.db.execute(f"INSERT INTO {table} SELECT host, metric, ts, low, value, high FROM columns")
        self.db.execute("CHECKPOINT")

    def query(self, host_id, seconds, step):
        table = {1: "s1", 60: "m1", 3600: "h1"}[step]
        fields = "value" if step == 1 else "low, mean, high"
        host = self.hosts[host_id]
        return self.db.execute(f"SELECT metric, ts, {fields} FROM {table} WHERE host = ? AND ts >= ? AND ts <= ? "
                               "ORDER BY metric, ts", (host, int((self.now - seconds) * 1000),
                                                        int(self.now * 1000))).fetchnumpy()


ENGINES = {"sqlite": SqliteEngine, "duckdb": DuckdbEngine}


def part_size(engine, args):
    feed = Feed(args.size_hosts)
    cpu = 0.0
    for second in range(args.size_seconds):
        engine.now = T0 + second + 1
        entries = feed.second(T0 + second)
        started = time.process_time()
        engine.ingest_entries(entries)
        engine.commit()
        cpu += time.process_time() - started
    rollup = engine.rollup_cpu()
    size, samples = engine.finish()
    host_hours = args.size_hosts * args.size_seconds / 3600
    return {"bytes_per_sample": size / max(samples, 1), "samples": samples, "file_bytes": size,
            "payload_bytes_per_sample": getattr(engine, "payload", size) / max(samples, 1),
            "file_bytes_per_sample": getattr(engine, "file_bytes", size) / max(samples, 1),
            "rollup_cpu_ms_per_host_hour": rollup * 1000 / host_hours, "size_ingest_cpu_s": cpu}


def part_ingest(engine, args):
    feed = Feed(args.ingest_hosts)
    cpu = 0.0
    for second in range(args.ingest_seconds):
        events = feed.events(T0 + second)
        engine.now = T0 + second + 1
        started = time.process_time()
        engine.ingest_events(events)
        engine.commit()
        cpu += time.process_time() - started
    return {"ingest_cpu_percent": cpu / args.ingest_seconds * 100,
            "rss_mb": psutil.Process().memory_info().rss / 2**20}


def part_query(engine, args):
    feed = Feed(args.query_hosts, seed=3)
    ids = feed.ids
    engine.now = T0
    fill_started = time.monotonic()
    engine.fill(ids, feed.names, T0)
    fill_seconds = time.monotonic() - fill_started
    rng = random.Random(4)
    walls, cpus = {name: [] for name, _, _ in QUERIES}, {name: [] for name, _, _ in QUERIES}
    for round_index in range(args.queries):
        engine.now = T0 + round_index + 1
        engine.ingest_entries(feed.second(T0 + round_index))
        engine.commit()
        for name, seconds, step in QUERIES:
            started, cpu = time.perf_counter(), time.process_time()
            engine.query(rng.choice(ids), seconds, step)
            walls[name].append(time.perf_counter() - started)
            cpus[name].append(time.process_time() - cpu)
    result = {"fill_seconds": fill_seconds}
    for name in walls:
        result[f"{name}_p50_ms"] = percentile(walls[name], 0.5) * 1000
        result[f"{name}_p99_ms"] = percentile(walls[name], 0.99) * 1000
        result[f"{name}_cpu_p99_ms"] = percentile(cpus[name], 0.99) * 1000
    return result


def part_live(args):
    """The real `nerve recorder` process on a real router, fed nerve.samples by this process playing the orchestrator:
    its CPU (% of one core) after the first 30 s and its RSS at the end."""
    from twisted.internet import defer, task

    from common import CpuMeter
    from components.testing.live import ComponentProcess, RouterProcess, join, sleep, wait_for_callees

    result = {}

    async def run(reactor):
        with tempfile.TemporaryDirectory(prefix="history-bench-live-") as directory:
            router = RouterProcess(directory).start()
            recorder = ComponentProcess(router, "recorder", "--log-level", "warn",
                                        env={"NERVE_DATA_DIR": os.path.join(directory, "data")})
            try:
                publisher = await join(router.rawsocket_url, "orchestrator", "bench-orchestrator",
                                       router.ticket("orchestrator", "bench-orchestrator"), serializers=("msgpack",))
                observer = await join(router.rawsocket_url, "operator", "bench-observer",
                                      router.ticket("operator", "bench-observer"))
                await wait_for_callees(observer, "nerve.history.range", 1, timeout=60)
                feed = Feed(args.ingest_hosts)

                def publish():
                    for payload in feed.payloads(time.time() - 0.5):
                        publisher.publish("nerve.samples", payload)

                publishing = task.LoopingCall(publish)
                publishing.start(1.0)
                await sleep(30)
                meter = CpuMeter("recorder", recorder.process.pid, children=False)
                meter.begin()
                await sleep(max(args.ingest_seconds - 30, 30))
                result["live_cpu_percent"], result["live_rss_mb"] = meter.end()
                publishing.stop()
            finally:
                recorder.stop()
                router.stop()
        print(json.dumps(result))

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))


PARTS = {"size": part_size, "ingest": part_ingest, "query": part_query, "live": None}


def worker(args):
    if args.part == "live":
        return part_live(args)
    with tempfile.TemporaryDirectory(prefix="history-bench-") as directory:
        engine = ENGINES[args.worker](directory)
        print(json.dumps(PARTS[args.part](engine, args)))


def run_part(engine, part, args):
    command = [sys.executable, os.path.abspath(__file__), "--worker", engine, "--part", part] + [
        f"--{key.replace('_', '-')}={value}" for key, value in vars(args).items()
        if key not in ("worker", "part", "engines", "live") and value is not None]
    done = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT)
    if done.returncode:
        raise SystemExit(f"{engine} {part} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def verdicts(result):
    """{number: passed} of one engine's results against the targets."""
    checks = {"bytes/sample": result["bytes_per_sample"] <= TARGETS["bytes_per_sample"],
              "ingest CPU": result["ingest_cpu_percent"] < TARGETS["ingest_cpu_percent"],
              "RSS": result["rss_mb"] < TARGETS["rss_mb"]}
    for name, _, _ in QUERIES:  # on CPU time: the wall time on this shared machine waits for the others' work too
        checks[f"p99 {name}"] = result[f"{name}_cpu_p99_ms"] < TARGETS["p99_ms"]
    if "live_cpu_percent" in result:
        checks["live CPU"] = result["live_cpu_percent"] < TARGETS["ingest_cpu_percent"]
        checks["live RSS"] = result["live_rss_mb"] < TARGETS["rss_mb"]
    return checks


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="sqlite,duckdb")
    parser.add_argument("--ingest-hosts", type=int, default=5000)
    parser.add_argument("--ingest-seconds", type=int, default=150)
    parser.add_argument("--size-hosts", type=int, default=200)
    parser.add_argument("--size-seconds", type=int, default=1920)
    parser.add_argument("--query-hosts", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--no-live", dest="live", action="store_false",
                        help="skip the real recorder process on a real router (its CPU and RSS at --ingest-hosts)")
    parser.add_argument("--worker", choices=sorted(ENGINES), help=argparse.SUPPRESS)
    parser.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    results = {}
    for engine in args.engines.split(","):
        results[engine] = {}
        for part in PARTS:
            if part == "live" and (engine != "sqlite" or not args.live):
                continue
            print(f"  {engine}: {part}…", file=sys.stderr, flush=True)
            results[engine].update(run_part(engine, part, args))
    columns = [("bytes/sample 1 s", "bytes_per_sample", "{:.2f}"), ("(whole file)", "file_bytes_per_sample", "{:.2f}"),
               ("ingest CPU % core", "ingest_cpu_percent", "{:.1f}"),
               ("RSS MB", "rss_mb", "{:.0f}"), ("rollup ms/host-h", "rollup_cpu_ms_per_host_hour", "{:.2f}")] + [
        (f"{name} ms p50/p99/CPU p99", name, None) for name, _, _ in QUERIES]
    print(f"{args.ingest_hosts} hosts ingest over {args.ingest_seconds} s; size: {args.size_hosts} hosts x "
          f"{args.size_seconds} s; queries: {args.query_hosts} hosts, {args.queries} rounds (wall times: shared machine)")
    print(f"{'engine':8}" + "".join(f"{title:>26}" for title, _, _ in columns))
    for engine, result in results.items():
        cells = []
        for _, key, form in columns:
            cells.append(form.format(result[key]) if form else
                         f"{result[f'{key}_p50_ms']:.1f}/{result[f'{key}_p99_ms']:.1f}/{result[f'{key}_cpu_p99_ms']:.1f}")
        print(f"{engine:8}" + "".join(f"{cell:>26}" for cell in cells))
    print(f"{'target':8}" + "".join(f"{cell:>26}" for cell in ("<= 2", "", "< 25", "< 300", "", "CPU p99 < 100",
                                                                  "CPU p99 < 100", "CPU p99 < 100")))
    for engine, result in results.items():
        if "live_cpu_percent" in result:
            print(f"{engine}: the `nerve recorder` process on a real router at {args.ingest_hosts} hosts: "
                  f"{result['live_cpu_percent']:.1f} % of a core, RSS {result['live_rss_mb']:.0f} MB")
    summary = []
    for engine, result in results.items():
        checks = verdicts(result)
        failed = [name for name, passed in checks.items() if not passed]
        summary.append(f"{engine} {'PASS' if not failed else 'FAIL (' + ', '.join(failed) + ')'}: "
                       f"{result['bytes_per_sample']:.2f} B/sample, {result['ingest_cpu_percent']:.1f} % core, "
                       f"{result['rss_mb']:.0f} MB, query p99 wall " + "/".join(f"{result[f'{name}_p99_ms']:.0f}" for name, _, _ in QUERIES)
                       + " ms, CPU " + "/".join(f"{result[f'{name}_cpu_p99_ms']:.0f}" for name, _, _ in QUERIES) + " ms" + (f", live recorder {result['live_cpu_percent']:.1f} % core {result['live_rss_mb']:.0f} MB"
                                  if "live_cpu_percent" in result else ""))
    print("history_bench: " + "; ".join(summary))
    return 0 if all(all(verdicts(result).values()) for result in results.values() if result is results.get("sqlite")) else 1


if __name__ == "__main__":
    sys.exit(main())
