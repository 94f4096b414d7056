"""The history store with plain calls: packing round trip, tiers and rollups, retention by age and size, the journal."""

import os
import sqlite3

import numpy as np
import pytest
from twisted.internet import defer

from components.history.codec import pack_block, quantum_of, unpack_block
from components.history.store import STORE_FILE, StoreError, open_store
from components.history.tiers import DEFAULT_TIERS, parse_retention, parse_size
from components.mesh.errors import ConfigError

T0 = 1_800_000_000.0  # a multiple of every tier's block, so periods are easy to reason about


class Clock:
    """A settable clock for the store."""

    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def entry(ts, **metrics):
    """A nerve.samples host entry with the given timestamps and metric value lists."""
    return {"hostname": "web-01.example", "ts": list(ts), "metrics": {name: list(values) for name, values in metrics.items()}}


def feed(store, clock, host_id, start, seconds, value=lambda t: float(t % 100)):
    """One sample a second for `seconds` from `start`, committed each second as the recorder does."""
    for t in np.arange(start, start + seconds):
        clock.now = t + 0.5
        store.ingest({host_id: entry([float(t)], cpu=[value(t)], net_recv=[1000.0 + t % 7])})
        store.commit()


def test_a_block_packs_small_and_comes_back_within_its_quantum():
    rng = np.random.default_rng(1)
    ts = T0 + np.arange(120) + rng.uniform(0, 0.01, 120)
    names = ["cpu", "load1", "net_recv", "procs", "custom"]
    values = np.array([rng.uniform(0, 100, 120).round(2), rng.uniform(0, 4, 120).round(3),
                       rng.lognormal(11, 1.2, 120), rng.integers(90, 400, 120), rng.normal(0, 1e6, 120)])
    values[0, 5] = np.nan
    quanta = [quantum_of(name) for name in names]
    back_ts, back = unpack_block(pack_block(ts, values, quanta), quanta)
    assert np.allclose(back_ts, ts, atol=0.0005)
    assert np.isnan(back[0, 5]) and np.isnan(back).sum() == 1
    assert np.allclose(back[0], values[0], atol=0.005, equal_nan=True)
    assert np.allclose(back[2], values[2], rtol=0.0006)
    assert np.allclose(back[[1, 3, 4]], values[[1, 3, 4]], atol=0.0005)
    flat = np.tile(values[:, :1], 120)  # a metric that does not move costs next to nothing
    assert len(pack_block(ts, flat, quanta)) < 0.5 * flat.size  # the jittery timestamps are most of it
    rising = np.tile(np.arange(120.0) * 1.5, (5, 1))  # a steady trend is differenced: constant steps
    assert len(pack_block(ts, rising, quanta)) < 0.5 * rising.size
    assert np.allclose(unpack_block(pack_block(ts, rising, quanta), quanta)[1][[0, 1, 3, 4]], rising[[0, 1, 3, 4]])


def test_retention_and_sizes_parse_and_bad_ones_are_refused():
    tiers = parse_retention("1s=1d,1h=2y")
    assert [tier.keep for tier in tiers] == [86400, 30 * 86400, 2 * 365 * 86400]
    assert parse_size("2GB") == 2 * 10**9 and parse_size("512MiB") == 512 * 2**20
    for bad in ("1x=2d", "1s=two", "1s=0d"):
        with pytest.raises(ConfigError):
            parse_retention(bad)
    with pytest.raises(ConfigError):
        parse_size("lots")


def test_samples_come_back_at_1s_and_rolled_up_at_1min_with_min_mean_max(tmp_path):
    clock = Clock(T0)
    store = open_store(tmp_path, clock=clock)
    feed(store, clock, "web-01", T0, 300)
    raw = store.range("web-01", T0 + 10, T0 + 19, 0)
    assert raw["step"] == 1 and raw["ts"] == [T0 + t for t in range(10, 20)] and raw["hostname"] == "web-01.example"
    assert raw["series"]["cpu"] == [float(t % 100) for t in range(10, 20)] and "min" not in raw
    minutes = store.range("web-01", T0, T0 + 299, 1)
    assert minutes["step"] == 60 and minutes["ts"] == [T0 + 60 * m for m in range(5)]
    first = [float((T0 + t) % 100) for t in range(60)]
    assert minutes["min"]["cpu"][0] == min(first) and minutes["max"]["cpu"][0] == max(first)
    assert minutes["series"]["cpu"][0] == pytest.approx(sum(first) / 60, abs=0.01)
    # Once 1 s blocks are written past a 30-minute period, its 1 min block is stored and gives the same answer.
    feed(store, clock, "web-01", T0 + 300, 1800)
    store.roll_up()
    store.commit()
    assert store.stats()["tiers"]["1m"]["samples"] > 0
    stored = store.range("web-01", T0, T0 + 299, 1)
    for kind in ("series", "min", "max"):  # stored rollups are kept to the metric's quantum
        for name, values in minutes[kind].items():
            assert stored[kind][name] == pytest.approx(values, rel=6e-4, abs=0.006)
    hours = store.range("web-01", T0, T0 + 2099, 2)
    assert hours["step"] == 3600 and hours["ts"] == [T0] and hours["max"]["cpu"] == [99.0]


def test_the_journal_gives_back_the_open_block_after_a_kill_and_a_damaged_store_is_refused_untouched(tmp_path):
    clock = Clock(T0)
    store = open_store(tmp_path, clock=clock)
    feed(store, clock, "web-01", T0, 200)
    store.db.close()  # as a SIGKILL leaves it: nothing closed or flushed beyond the last commit
    again = open_store(tmp_path, clock=clock)
    assert again.range("web-01", T0, T0 + 199, 0)["ts"] == [T0 + t for t in range(200)]
    again.close()
    path = tmp_path / STORE_FILE
    with open(path, "r+b") as handle:
        handle.seek(0)
        handle.write(b"not a database, just bytes" * 4)
    before = path.read_bytes()
    with pytest.raises(StoreError, match=str(path)):
        open_store(tmp_path, clock=clock)
    assert path.read_bytes() == before
    other = tmp_path / "other"
    other.mkdir()
    sqlite3.connect(other / STORE_FILE).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(StoreError, match="left untouched"):
        open_store(other, clock=clock)


def test_a_block_written_before_a_kill_keeps_every_sample_when_the_journal_replays(tmp_path):
    # Samples a millisecond before their block's end (a tracker's clock at x.999 s): the block closes and is
    # written while the journal still holds its seconds for another host's open block. The replay after a kill
    # must skip all of them: one taken again reopened the block and rewrote it with that one sample.
    clock = Clock(T0)
    store = open_store(tmp_path, clock=clock)
    block = store.tiers[0].block
    end = (T0 - store.host("a").offset) // block * block + store.host("a").offset + block
    stamps = [end - 30 + k - 0.001 for k in range(40)]  # 30 before the end, 10 after
    for ts in stamps:
        clock.now = ts + 0.5
        store.ingest({"a": entry([ts], cpu=[1.0]), "b": entry([ts], cpu=[2.0])})
        store.commit()
    assert store.db.execute("SELECT COUNT(*) FROM journal").fetchone()[0] >= 40  # b's block is open since before
    store.db.close()  # as a SIGKILL leaves it
    again = open_store(tmp_path, clock=clock)
    clock.now = end + 10.5
    again.ingest({"a": entry([end + 10], cpu=[1.0]), "b": entry([end + 10], cpu=[2.0])})
    again.commit()
    for host in ("a", "b"):
        assert again.range(host, end - 31, end + 11, 0)["ts"] == pytest.approx([*stamps, end + 10], abs=0.0006), host


def test_old_blocks_go_by_age_and_the_oldest_first_when_over_the_disk_budget(tmp_path):
    clock = Clock(T0)
    tiers = parse_retention("1s=10m")
    store = open_store(tmp_path, tiers=tiers, clock=clock)
    for index in range(20):  # 20 blocks of 2 minutes, written directly as benches do
        start = T0 + 120 * index
        store.write_block(0, "web-01", start, start + 120, start + np.arange(120), ["cpu"],
                          np.random.default_rng(index).uniform(0, 100, (1, 120)))
    store.commit()
    clock.now = T0 + 2400
    store.enforce_retention()
    kept = store.range("web-01", T0, T0 + 2400, 0)["ts"]
    assert kept[0] == T0 + 1680 and kept[-1] == T0 + 2399  # blocks ending 10 min before now or earlier went
    size_capped = open_store(tmp_path / "capped", tiers=DEFAULT_TIERS, max_disk=10_000, clock=Clock(T0))
    for index in range(40):
        start = T0 + 120 * index
        size_capped.write_block(0, "web-01", start, start + 120, start + np.arange(120), ["cpu"],
                                np.random.default_rng(index).uniform(0, 100, (1, 120)))
    size_capped.commit()
    size_capped.enforce_retention()
    assert size_capped.bytes[0] <= 10_000 * DEFAULT_TIERS[0].share
    left = size_capped.range("web-01", T0, T0 + 4800, 0)["ts"]
    assert left and left[-1] == T0 + 4799 and left[0] > T0  # the newest stay, the oldest went
    assert os.path.exists(tmp_path / "capped" / STORE_FILE)


def test_a_journal_row_gives_back_its_samples_to_the_millisecond_with_missing_values(tmp_path):
    clock = Clock(T0 + 5)
    store = open_store(tmp_path, clock=clock)
    batch = {"a": entry([T0 + 0.1234, T0 + 1.1234], cpu=[1.5, None], net_recv=[1e6, 2e6]), "c": entry([T0], mem=[40.0])}
    assert store.ingest(batch) == 3
    store.commit()
    store.db.close()
    again = open_store(tmp_path, clock=clock)
    back = again.range("a", T0, T0 + 2, 0)
    assert back["ts"] == pytest.approx([T0 + 0.123, T0 + 1.123], abs=0.0006)
    assert back["series"]["cpu"] == [1.5, None] and back["series"]["net_recv"] == pytest.approx([1e6, 2e6], rel=6e-4)
    assert again.range("c", T0, T0 + 2, 0)["series"] == {"mem": [40.0]}
    assert again.ingest(batch) == 0  # the same samples again (a gap fill after the restart) are not taken twice


def test_bad_retention_and_disk_budget_flags_are_usage_errors_naming_what_to_fix():
    from click.testing import CliRunner

    from components.cli.main import main

    for flags, words in ((["--retention", "1x=2d"], "retention names a tier of 1s, 1m, 1h"),
                         (["--max-disk", "lots"], "a size is a number and a unit"),
                         (["--max-disk", "10KB"], "max disk must be at least 1MB")):
        result = CliRunner().invoke(main, ["recorder", *flags])
        assert result.exit_code == 2 and words in result.output, result.output


def test_events_of_a_rejoin_wait_for_its_gap_fill_so_the_seconds_missed_are_recorded(tmp_path):
    from components.history.recorder import SAMPLES_SINCE_URI, SAMPLES_TOPIC, Recorder, RecorderConfig
    from components.mesh.config import MeshConfig
    from components.testing import FakeMesh

    clock = Clock(1000.5)
    store = open_store(str(tmp_path), clock=clock)
    config = RecorderConfig(mesh=MeshConfig(role="recorder", authid="recorder-t"), data_dir=str(tmp_path))
    fake = FakeMesh(config)
    recorder = Recorder(config, fake.mesh, store, clock=clock)
    fake.answer(SAMPLES_SINCE_URI, lambda since, after=None: {"hosts": {}, "next": None})
    fake.bind(recorder)  # the first join: nothing to fill yet
    fake.deliver(SAMPLES_TOPIC, {"hosts": {"web-01": entry([1000.0, 1001.0], cpu=[1.0, 2.0])}})
    # The router restarts: seconds 1002-1004 pass while the recorder is away. On the rejoin the gap fill asks the
    # orchestrator, and the new second's event comes in before the answer.
    asked, answer = [], defer.Deferred()
    fake.answer(SAMPLES_SINCE_URI, lambda since, after=None: asked.append(since) or answer)
    fake.rejoin()
    fake.deliver(SAMPLES_TOPIC, {"hosts": {"web-01": entry([1005.0], cpu=[6.0])}})
    assert recorder.counts["events"] == 1 and recorder.state == "filling gap"  # the event waits for the fill
    answer.callback({"hosts": {"web-01": entry([1001.0, 1002.0, 1003.0, 1004.0, 1005.0], cpu=[2.0, 3.0, 4.0, 5.0, 6.0])},
                     "next": None})
    assert recorder.counts["events"] == 2 and recorder.state == "recording"
    assert asked and asked[0] <= 1001.0, asked  # from the last sample before the outage, not the held one
    clock.now = 1006.5
    store.commit()
    assert store.range("web-01", 999.0, 1006.0, 0)["ts"] == [1000.0, 1001.0, 1002.0, 1003.0, 1004.0, 1005.0]
    assert recorder.counts["gap_filled"] == 4 and recorder.counts["samples"] == 2  # the held second came in the fill


def test_a_stop_commits_the_last_second_and_a_query_during_the_gap_fill_is_told_to_wait(tmp_path):
    from components.history.recorder import RANGE_URI, SAMPLES_SINCE_URI, SAMPLES_TOPIC, Recorder, RecorderConfig
    from components.mesh.config import MeshConfig
    from components.mesh.errors import Unavailable
    from components.testing import FakeMesh

    clock = Clock(1000.5)
    config = RecorderConfig(mesh=MeshConfig(role="recorder", authid="recorder-t"), data_dir=str(tmp_path))
    fake = FakeMesh(config)
    recorder = Recorder(config, fake.mesh, open_store(str(tmp_path), clock=clock), clock=clock)
    answer = defer.Deferred()
    fake.answer(SAMPLES_SINCE_URI, lambda since, after=None: answer)
    fake.bind(recorder)
    with pytest.raises(Unavailable, match="filling its gap"):
        fake.call(RANGE_URI, "web-01", 990.0, 1001.0, 1)
    answer.callback({"hosts": {"web-01": entry([999.0], cpu=[1.0])}, "next": None})
    fake.deliver(SAMPLES_TOPIC, {"hosts": {"web-01": entry([1000.0], cpu=[2.0])}})
    assert fake.call(RANGE_URI, "web-01", 990.0, 1001.0, 1)["ts"] == [999.0, 1000.0]
    fake.stop()  # the process stops before any commit timer ran
    store = open_store(str(tmp_path), clock=clock)
    try:
        assert store.range("web-01", 990.0, 1001.0, 0)["ts"] == [999.0, 1000.0]
    finally:
        store.close()
