"""Behaviour of the streaming per-metric analysis: levels, statistics, state round trips and validation."""

import json
import math
import re
import struct

import msgpack
import numpy as np
import pytest

from components.monitor.analysis import (
    DEFAULT_THRESHOLDS,
    LEVELS,
    STATE_WIDTH,
    AnalysisParams,
    Thresholds,
    analyze_batch,
    describe_compact,
    pack_batch,
    pack_results,
    parse_thresholds,
    unpack_batch,
)
from components.mesh.errors import InvalidArgument

T0 = 1.7e9  # epoch-sized timestamps, so precision loss would show


def samples_of(values, metric="cpu", dt=1.0, t0=T0, seq0=0):
    """One sample per value, dt seconds apart."""
    return [{"seq": seq0 + i, "ts": t0 + i * dt, "metrics": {metric: float(v)}} for i, v in enumerate(values)]


def analyze_one(samples, state=None, host_id="web-1", **kwargs):
    return analyze_batch([{"host_id": host_id, "state": state, "samples": samples}], **kwargs)[0]


def tick_by_tick(samples, **kwargs):
    """Feed samples one per call, as the orchestrator does on every tick; returns every result."""
    results, state = [], None
    for sample in samples:
        result = analyze_one([sample], state, **kwargs)
        state = result["state"]
        results.append(result)
    return results


def stream(values, metric="x", dt=1.0, params=AnalysisParams()):
    """The per-sample metric outputs for a series, tick by tick."""
    return [r["metrics"][metric] for r in tick_by_tick(samples_of(values, metric, dt), params=params)]


# --- levels ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "metric, value, level",
    [
        ("cpu", 0, "LOW"),
        ("cpu", 24.9, "LOW"),
        ("cpu", 25, "MEDIUM"),
        ("cpu", 74.9, "MEDIUM"),
        ("cpu", 75, "HIGH"),
        ("cpu", 100, "HIGH"),
        ("mem", 69.9, "LOW"),
        ("mem", 70, "MEDIUM"),
        ("mem", 90, "HIGH"),
        ("swap", 49.9, "LOW"),
        ("swap", 80, "HIGH"),
        ("disk_used.root", 94.9, "MEDIUM"),  # the family before the dot picks the thresholds
        ("disk_used.home", 95, "HIGH"),
        ("load1", 99, None),  # no thresholds for the family
        ("cpu_core.3", 99, None),
        ("net_recv", 1e9, None),
    ],
)
def test_first_value_sets_level_at_once_without_a_change(metric, value, level):
    result = analyze_one(samples_of([value], metric))
    assert result["metrics"][metric]["level"] == level
    assert result["level"] == level
    assert result["changes"] == []


@pytest.mark.parametrize(
    "values, levels",
    [
        # hysteresis: leaving HIGH needs < 75 - 5
        ([80, 72, 72, 72], ["HIGH", "HIGH", "HIGH", "HIGH"]),
        ([80, 69, 69], ["HIGH", "HIGH", "MEDIUM"]),
        ([80, 22, 22], ["HIGH", "HIGH", "MEDIUM"]),  # 22 is not below 25 - 5, so only MEDIUM
        ([80, 19, 19], ["HIGH", "HIGH", "LOW"]),
        ([50, 24, 24], ["MEDIUM", "MEDIUM", "MEDIUM"]),
        ([50, 19.9, 19.9], ["MEDIUM", "MEDIUM", "LOW"]),
        # minimum duration: a one-sample spike does not change the level, two at 1 s spacing do
        ([50, 80, 50, 50], ["MEDIUM"] * 4),
        ([50, 80, 80], ["MEDIUM", "MEDIUM", "HIGH"]),
        ([10, 30, 10, 30, 10], ["LOW"] * 5),
        ([10, 30, 30], ["LOW", "LOW", "MEDIUM"]),
        # going up in two steps: MEDIUM has held for 1 s when HIGH first shows, HIGH waits its own second
        ([10, 60, 80, 80], ["LOW", "LOW", "MEDIUM", "HIGH"]),
        # a jump that falls back part way keeps its timer: the value has been >= 25 for 1 s
        ([10, 80, 60], ["LOW", "LOW", "MEDIUM"]),
        # a candidate in the other direction restarts the timer
        ([50, 80, 10, 10], ["MEDIUM", "MEDIUM", "MEDIUM", "LOW"]),
        # hovering around a boundary never flaps
        ([74, 76] * 10, ["MEDIUM"] * 20),
        ([76, 74] * 10, ["HIGH"] * 20),
        ([76, 69.9, 76, 69.9, 76], ["HIGH"] * 5),
        ([24, 26] * 10, ["LOW"] * 20),
    ],
)
def test_level_sequence_with_default_cpu_thresholds(values, levels):
    results = tick_by_tick(samples_of(values, "cpu"))
    assert [r["metrics"]["cpu"]["level"] for r in results] == levels
    # one call with every sample must reach the same final level and the same changes
    one_shot = analyze_one(samples_of(values, "cpu"))
    assert one_shot["metrics"]["cpu"]["level"] == levels[-1]
    assert one_shot["changes"] == [change for r in results for change in r["changes"]]


def test_changes_carry_previous_and_new_level_at_the_sample_that_caused_them():
    values = [10, 60, 80, 80, 80, 50, 50, 10, 10]
    result = analyze_one(samples_of(values, "cpu", seq0=100))
    assert result["changes"] == [
        {"metric": "cpu", "previous": "LOW", "level": "MEDIUM", "ts": T0 + 2, "seq": 102, "value": 80.0},
        {"metric": "cpu", "previous": "MEDIUM", "level": "HIGH", "ts": T0 + 3, "seq": 103, "value": 80.0},
        {"metric": "cpu", "previous": "HIGH", "level": "MEDIUM", "ts": T0 + 6, "seq": 106, "value": 50.0},
        {"metric": "cpu", "previous": "MEDIUM", "level": "LOW", "ts": T0 + 8, "seq": 108, "value": 10.0},
    ]
    assert result["level"] == "LOW"


@pytest.mark.parametrize(
    "thresholds, dt, values, levels",
    [
        # min_duration 2 s with 0.5 s samples: the fifth sample at the new level switches
        (Thresholds(25, 75, 5, 2), 0.5, [10, 30, 30, 30, 30, 30], ["LOW"] * 5 + ["MEDIUM"]),
        # min_duration 0: every crossing is adopted at once
        (Thresholds(25, 75, 5, 0), 1.0, [10, 30, 80, 10], ["LOW", "MEDIUM", "HIGH", "LOW"]),
        # no hysteresis: dropping just below the boundary is enough (after the minimum duration)
        (Thresholds(25, 75, 0, 1), 1.0, [80, 74.9, 74.9], ["HIGH", "HIGH", "MEDIUM"]),
        # wider hysteresis than the band: from HIGH, 50 is still above 75 - 30
        (Thresholds(25, 75, 30, 1), 1.0, [80, 50, 50, 40, 40], ["HIGH", "HIGH", "HIGH", "HIGH", "MEDIUM"]),
    ],
)
def test_custom_thresholds(thresholds, dt, values, levels):
    results = tick_by_tick(samples_of(values, "cpu", dt), thresholds={"cpu": thresholds})
    assert [r["metrics"]["cpu"]["level"] for r in results] == levels


def test_host_level_is_the_highest_metric_level():
    sample = {"seq": 1, "ts": T0, "metrics": {"cpu": 10.0, "mem": 95.0, "load1": 50.0, "disk_used.root": 81.0}}
    result = analyze_one([sample])
    assert result["level"] == "HIGH"
    assert {name: m["level"] for name, m in result["metrics"].items()} == {
        "cpu": "LOW", "mem": "HIGH", "load1": None, "disk_used.root": "MEDIUM"}
    assert analyze_one([{"seq": 1, "ts": T0, "metrics": {"load1": 3.0}}])["level"] is None


def test_changes_for_several_metrics_are_ordered_by_sample_then_metric():
    samples = [{"seq": i, "ts": T0 + i, "metrics": {"mem": m, "cpu": c}}
               for i, (c, m) in enumerate([(10, 10), (80, 80), (80, 80)])]
    changes = analyze_one(samples)["changes"]
    assert [(c["metric"], c["previous"], c["level"], c["seq"]) for c in changes] == [
        ("cpu", "LOW", "HIGH", 2), ("mem", "LOW", "MEDIUM", 2)]


# --- statistics --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "slope_per_second, dt, expected_trend",
    [(1.0, 1.0, 60.0), (0.0, 1.0, 0.0), (-0.5, 1.0, -30.0), (1.0, 10.0, 60.0), (2.0, 0.25, 120.0)],
)
def test_trend_is_slope_per_minute(slope_per_second, dt, expected_trend):
    values = [5.0 + slope_per_second * i * dt for i in range(120)]
    last = stream(values, dt=dt)[-1]
    assert last["trend"] == pytest.approx(expected_trend, abs=1e-6)


def test_trend_with_irregular_intervals_and_noise():
    rng = np.random.default_rng(7)
    times = T0 + np.cumsum(rng.uniform(0.2, 3.0, 300))
    samples = [{"seq": i, "ts": float(t), "metrics": {"x": float((t - T0) * 1.0 + rng.normal(0, 2))}}
               for i, t in enumerate(times)]
    trend = analyze_one(samples)["metrics"]["x"]["trend"]
    assert trend == pytest.approx(60.0, rel=0.1)


def test_trend_sign_follows_recent_direction():
    # a weighted regression with a 60 s half-life turns over a few half-lives after the series does
    samples = samples_of([float(i) for i in range(200)] + [200.0 - i for i in range(600)], "x")
    state, trends = None, []
    for start, stop in ((0, 200), (200, 400), (400, 800)):
        result = analyze_one(samples[start:stop], state)
        state = result["state"]
        trends.append(result["metrics"]["x"]["trend"])
    assert trends[0] == pytest.approx(60.0)
    assert trends[1] < -20
    assert trends[2] == pytest.approx(-60.0, rel=0.02)
    assert analyze_one(samples_of([42.0]))["metrics"]["cpu"]["trend"] == 0.0  # one point has no slope


@pytest.mark.parametrize(
    "draw, true_p95, true_mean, spread",
    [
        pytest.param(lambda rng, n: rng.normal(50, 10, n), 50 + 1.6448536 * 10, 50.0, 10.0, id="normal"),
        # skewed: p95 far above the mean
        pytest.param(lambda rng, n: rng.exponential(5.0, n), 5.0 * math.log(20), 5.0, 5.0, id="exponential"),
    ],
)
def test_p95_and_mean_converge_on_a_stationary_series(draw, true_p95, true_mean, spread):
    # With half-life 60 s at 1 Hz the weights cover ~170 effective samples, so the sampling error of a
    # p95 estimate is ~0.2 standard deviations (the estimator matched an exact weighted quantile in a
    # simulation over 40 seeds); 0.75 sd is a loose bound, checked at several points after 100 samples.
    values = draw(np.random.default_rng(2024), 400)
    state, seen = None, []
    for chunk in range(0, 400, 50):
        result = analyze_one(samples_of(values[chunk:chunk + 50], "x", t0=T0 + chunk), state)
        state = result["state"]
        seen.append(result["metrics"]["x"])
    for m in seen[2:]:  # after 150, 200, ... 400 samples
        assert abs(m["p95"] - true_p95) < 0.75 * spread
        assert abs(m["mean"] - true_mean) < 0.35 * spread
        assert m["p95"] > m["mean"]


def test_mean_uses_the_half_life_in_seconds():
    # after a step from 0 to 10 the mean has covered half the step one half-life later
    params = AnalysisParams(half_life=30.0)
    dense = analyze_one(samples_of([0.0] * 2000 + [10.0] * 30, "x"), params=params)
    assert dense["metrics"]["x"]["mean"] == pytest.approx(5.0, abs=0.15)
    # the same in wall time with sparser samples
    sparse = analyze_one(samples_of([0.0] * 200 + [10.0] * 3, "x", dt=10.0), params=params)
    assert sparse["metrics"]["x"]["mean"] == pytest.approx(5.0, abs=1.0)


def test_anomaly_spike_after_flat_baseline_is_large():
    outputs = stream([10.0] * 30 + [60.0, 10.0])
    assert outputs[29]["anomaly"] == 0.0
    assert outputs[30]["anomaly"] > 5
    assert abs(outputs[31]["anomaly"]) < 1  # back at the baseline


def test_anomaly_of_noise_stays_small_and_drops_at_a_spike():
    rng = np.random.default_rng(11)
    values = list(rng.normal(40, 3, 300)) + [100.0]
    scores = np.array([m["anomaly"] for m in stream(values)])
    noise = np.abs(scores[30:300])
    assert np.mean(noise < 3) > 0.97
    assert np.median(noise) < 1.2
    assert scores[300] > 10


@pytest.mark.parametrize("warmup", [0, 1, 10, 25])
def test_anomaly_is_zero_during_warmup(warmup):
    values = [0.0, 100.0] * 20
    scores = [m["anomaly"] for m in stream(values, params=AnalysisParams(warmup=warmup))]
    first_scored = max(warmup, 1)  # the first sample has no baseline to be scored against
    assert scores[:first_scored] == [0.0] * first_scored
    assert all(s != 0.0 for s in scores[first_scored:])


@pytest.mark.parametrize("value", [0.0, 1e-12, 55.5, -3.0, 1e12])
def test_constant_series_gives_finite_zero_statistics(value):
    outputs = stream([value] * 50)
    for m in outputs:
        assert all(math.isfinite(m[key]) for key in ("value", "mean", "p95", "trend", "anomaly"))
    assert outputs[-1]["anomaly"] == 0.0
    assert outputs[-1]["trend"] == 0.0
    assert outputs[-1]["mean"] == pytest.approx(value)
    assert outputs[-1]["p95"] == value


def test_tiny_wiggle_on_flat_series_is_not_a_huge_score():
    outputs = stream([50.0] * 40 + [50.2])
    assert abs(outputs[-1]["anomaly"]) < 1


# --- state -------------------------------------------------------------------------------------


def mixed_samples(n, seed=3, t0=T0):
    """n samples with several metrics, one of which is missing from some samples."""
    rng = np.random.default_rng(seed)
    samples = []
    t = t0
    for i in range(n):
        t += float(rng.uniform(0.5, 2.0))
        metrics = {"cpu": float(np.clip(50 + 30 * np.sin(i / 7) + rng.normal(0, 5), 0, 100)),
                   "mem": float(60 + i * 0.1),
                   "load1": float(rng.exponential(2))}
        if i % 3:
            metrics["disk_used.root"] = float(85 + 12 * np.sin(i / 5))
        samples.append({"seq": i, "ts": t, "metrics": metrics})
    return samples


@pytest.mark.parametrize("chunk_sizes", [[1] * 60, [7, 13, 40], [59, 1], [30, 30]])
@pytest.mark.parametrize("through_json", [False, True])
def test_chunked_processing_equals_one_shot(chunk_sizes, through_json):
    samples = mixed_samples(sum(chunk_sizes))
    one_shot = analyze_one(samples)
    state, changes, start = None, [], 0
    for size in chunk_sizes:
        result = analyze_one(samples[start:start + size], state)
        start += size
        state = json.loads(json.dumps(result["state"])) if through_json else result["state"]
        changes.extend(result["changes"])
    assert result["state"] == one_shot["state"]
    assert result["metrics"] == one_shot["metrics"]
    assert result["level"] == one_shot["level"]
    assert changes == one_shot["changes"]
    assert changes  # the series crosses boundaries, so this compares something


def awkward_series(seed, rng, n=40):
    """(samples, params): gaps from a microsecond to years, values from 1e-300 to 1e100, metrics coming and going."""
    ts = T0 + np.cumsum(rng.choice([1e-6, 0.5, 1.0, 30.0, 700.0, 1e8], size=n))
    scale = [1e-300, 1e-6, 1.0, 1e6, 1e100][seed % 5]
    samples = [{"seq": i, "ts": float(ts[i]),
                "metrics": {name: float(np.clip(rng.normal(0, scale) * rng.choice([1, 100]), -1e100, 1e100))
                            for name in ("cpu", "x", "disk_used.a") if rng.random() < 0.8}}
               for i in range(n)]
    params = AnalysisParams(half_life=[0.001, 60.0, 1e6][seed % 3], warmup=seed % 4,
                            forget_after=[1.0, 600.0, 1e12][seed % 3])
    return samples, params


@pytest.mark.parametrize("seed", range(12))
def test_chunked_equals_one_shot_with_awkward_timing_and_magnitudes(seed):
    # the output stays finite JSON and a split anywhere changes nothing
    rng = np.random.default_rng(seed)
    samples, params = awkward_series(seed, rng)
    one_shot = analyze_one(samples, params=params)
    json.dumps(one_shot, allow_nan=False)
    split = int(rng.integers(1, len(samples)))
    first = analyze_one(samples[:split], params=params)
    second = analyze_one(samples[split:], json.loads(json.dumps(first["state"])), params=params)
    assert second["state"] == one_shot["state"]
    assert second["metrics"] == one_shot["metrics"]
    assert first["changes"] + second["changes"] == one_shot["changes"]


def test_batch_of_hosts_equals_each_host_alone():
    hosts = [
        {"host_id": "a", "state": None, "samples": mixed_samples(1, seed=1)},
        {"host_id": "b", "state": None, "samples": mixed_samples(40, seed=2)},
        {"host_id": "c", "state": None, "samples": samples_of([10, 80, 80, 5], "cpu")},
        {"host_id": "d", "state": None, "samples": []},
        {"host_id": "e", "state": analyze_one(mixed_samples(10, seed=4))["state"],
         "samples": mixed_samples(5, seed=5, t0=T0 + 100)},
        {"host_id": "f", "state": None, "samples": [{"seq": 0, "ts": 5.0, "metrics": {"procs": 301, "swap": 60}}]},
    ]
    together = analyze_batch(hosts)
    alone = [analyze_batch([host])[0] for host in hosts]
    assert [r["host_id"] for r in together] == ["a", "b", "c", "d", "e", "f"]
    assert together == alone


def compact_state_of(state):
    """A full (version 1) state in the compact wire form."""
    names = sorted(state["metrics"])
    rows = np.array([state["metrics"][name] for name in names], dtype="<f8").tobytes()
    return {"version": 2, "ts": state["ts"], "names": names, "rows": rows}


@pytest.mark.parametrize("chunk_sizes", [[1] * 60, [7, 13, 40], [60]])
def test_compact_wire_form_gives_exactly_the_full_results(chunk_sizes):
    # the orchestrator runs on compact results: describing one must give the full result bit for bit
    samples = mixed_samples(sum(chunk_sizes))
    full_state = compact = None
    start = 0
    for size in chunk_sizes:
        chunk = samples[start:start + size]
        start += size
        full = analyze_one(chunk, full_state)
        compact = analyze_one(chunk, compact and compact["state"], compact=True)
        full_state = full["state"]
        assert describe_compact(compact) == {"level": full["level"], "metrics": full["metrics"]}
        assert compact["changes"] == full["changes"]
        assert compact["state"] == compact_state_of(full["state"])
    assert set(compact) == {"host_id", "state", "level", "anomaly", "changes"}


@pytest.mark.parametrize("seed", [*range(12), None])
def test_described_compact_trend_is_the_full_results_trend(seed):
    # one trend formula serves both forms: lines not yet defined, awkward timings, and (seed None: samples 1e-250 s
    # apart swinging by 2e100) a slope that overflows
    if seed is None:
        samples = [{"seq": j, "ts": j * 1e-250, "metrics": {"x": 1e100 * (-1) ** j}} for j in range(6)]
        params = AnalysisParams()
    else:
        samples, params = awkward_series(seed, np.random.default_rng(seed))
    full = analyze_one(samples, params=params)
    described = describe_compact(analyze_one(samples, params=params, compact=True))
    trends = {name: entry["trend"] for name, entry in full["metrics"].items()}
    assert {name: entry["trend"] for name, entry in described["metrics"].items()} == trends


def test_compact_and_full_states_are_interchangeable_in_one_batch():
    first = analyze_batch([{"host_id": "a", "state": None, "samples": mixed_samples(10, seed=1)},
                           {"host_id": "b", "state": None, "samples": mixed_samples(10, seed=2)}])
    later = [{"host_id": "a", "state": first[0]["state"], "samples": mixed_samples(5, seed=3, t0=T0 + 100)},
             {"host_id": "b", "state": compact_state_of(first[1]["state"]), "samples": mixed_samples(5, seed=4, t0=T0 + 100)}]
    as_full = [dict(host, state=first[k]["state"]) for k, host in enumerate(later)]
    assert analyze_batch(later) == analyze_batch(as_full)


def test_packed_results_carry_sealed_states_that_analyse_exactly_like_open_ones():
    # The orchestrator stores a sealed state and sends it back without decoding its names and rows.
    first = analyze_one(mixed_samples(30), compact=True)
    [sealed] = unpack_batch(pack_results([first]))
    assert isinstance(sealed["state"], bytes) and msgpack.unpackb(sealed["state"]) == first["state"]
    assert describe_compact(sealed) == describe_compact(first)
    later = mixed_samples(5, t0=T0 + 100)
    assert analyze_one(later, sealed["state"], compact=True) == analyze_one(later, first["state"], compact=True)


@pytest.mark.parametrize("packed", [False, True])
def test_sample_rows_analyse_exactly_like_sample_dicts(packed):
    # Packed calls carry the orchestrator's window rows as they are: [seq, ts, names, little-endian float64s].
    samples = mixed_samples(40)  # one metric is missing from some samples: rows then carry fewer names
    rows = [[s["seq"], s["ts"], list(s["metrics"]), struct.pack(f"<{len(s['metrics'])}d", *s["metrics"].values())]
            for s in samples]
    if packed:
        rows = unpack_batch(pack_batch([rows]))[0]
    for compact in (False, True):
        assert analyze_one(rows, compact=compact) == analyze_one(samples, compact=compact)
    first = analyze_one(samples[:25], compact=True)
    assert analyze_one(rows[25:], first["state"], compact=True) == analyze_one(samples[25:], first["state"], compact=True)


def test_compact_state_is_one_binary_value_per_host():
    state = analyze_one(mixed_samples(50), compact=True)["state"]
    assert isinstance(state["rows"], bytes) and len(state["rows"]) == len(state["names"]) * STATE_WIDTH * 8


def test_empty_batch_and_host_without_samples():
    assert analyze_batch([]) == []
    assert analyze_batch([{"host_id": "new", "state": None, "samples": []}]) == [{
        "host_id": "new", "state": {"version": 1, "ts": None, "metrics": {}}, "level": None, "metrics": {},
        "changes": []}]


def test_state_is_compact_and_does_not_grow():
    samples = mixed_samples(300)
    sizes = []
    for n in (10, 100, 300):
        state = analyze_one(samples[:n])["state"]
        assert all(len(row) == STATE_WIDTH for row in state["metrics"].values())
        sizes.append(len(state["metrics"]))
    assert STATE_WIDTH <= 15
    assert sizes == [4, 4, 4]


def test_output_is_strict_json():
    result = analyze_batch([{"host_id": "h", "state": None, "samples": mixed_samples(50)}])
    json.dumps(result, allow_nan=False)  # raises on NaN or inf
    assert set(result[0]) == {"host_id", "state", "level", "metrics", "changes"}
    assert set(result[0]["metrics"]["cpu"]) == {"value", "level", "mean", "p95", "trend", "anomaly"}


def test_missing_metric_keeps_its_last_value_without_a_score():
    samples = samples_of([10.0] * 20, "x")
    for sample in samples[:-1]:
        sample["metrics"]["cpu"] = 80.0
    result = analyze_one(samples)
    assert result["metrics"]["cpu"]["value"] == 80.0
    assert result["metrics"]["cpu"]["level"] == "HIGH"
    assert result["metrics"]["cpu"]["anomaly"] == 0.0


def test_call_without_samples_repeats_the_analysis_without_scores():
    before = analyze_one(samples_of([10.0] * 20 + [90.0], "cpu"))
    after = analyze_one([], before["state"])
    assert after["state"] == before["state"]
    assert after["level"] == before["level"] == "LOW"  # one sample at 90 is a candidate, not a level
    assert after["changes"] == []
    assert before["metrics"]["cpu"]["anomaly"] > 5
    assert after["metrics"]["cpu"] == {**before["metrics"]["cpu"], "anomaly": 0.0}


def test_metric_silent_longer_than_forget_after_is_dropped_and_restarts():
    params = AnalysisParams(forget_after=30.0)
    samples = samples_of([1.0] * 60, "x")
    for sample in samples[:5]:
        sample["metrics"]["cpu"] = 90.0
    result = analyze_one(samples, params=params)
    assert "cpu" not in result["metrics"] and "cpu" not in result["state"]["metrics"]
    assert result["level"] is None
    later = analyze_one([{"seq": 99, "ts": T0 + 60, "metrics": {"x": 1.0, "cpu": 10.0}}], result["state"],
                        params=params)
    assert later["metrics"]["cpu"]["level"] == "LOW"
    assert later["changes"] == []  # a restarted metric starts at its level, like a new one


def test_thresholds_added_later_start_a_level_without_a_change():
    first = analyze_one(samples_of([90.0] * 3, "gpu"))
    assert first["metrics"]["gpu"]["level"] is None
    later = analyze_one(samples_of([90.0], "gpu", t0=T0 + 3), first["state"],
                        thresholds={"gpu": Thresholds(50, 80)})
    assert later["metrics"]["gpu"]["level"] == "HIGH"
    assert later["changes"] == []


# --- thresholds and parameters -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("cpu=25:75", {"cpu": Thresholds(25, 75)}),
        ("cpu=25:75,mem=70:90:5:2", {"cpu": Thresholds(25, 75), "mem": Thresholds(70, 90, 5, 2)}),
        (" disk_used = 80 : 95 : 2 ", {"disk_used": Thresholds(80, 95, 2)}),
        ("gpu=0.5:1e3:0:0", {"gpu": Thresholds(0.5, 1000, 0, 0)}),
        ("", {}),
    ],
)
def test_parse_thresholds(text, expected):
    assert parse_thresholds(text) == expected


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("cpu", "'cpu'"),
        ("cpu=25", "'cpu=25'"),
        ("cpu=25:75,mem=70:x", "'x' is not a number"),
        ("cpu=75:25", "low (75) must be below high (25)"),
        ("cpu=25:75:-1", "hysteresis"),
        ("cpu=25:75:5:-2", "min_duration"),
        ("cpu=25:nan", "'cpu=25:nan'"),
        ("cpu=1:2:3:4:5", "2 to 4 numbers"),
        ("cpu=25:75,cpu=30:80", "given twice"),
        ("cpu=25:75,,mem=1:2", "''"),
        ("disk.root=1:2", "'disk.root=1:2'"),
    ],
)
def test_parse_thresholds_rejects_bad_parts(text, fragment):
    with pytest.raises(InvalidArgument) as error:
        parse_thresholds(text)
    assert fragment in str(error.value)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"low": 75, "high": 25}, "low (75) must be below high (25)"),
        ({"low": 25, "high": 25}, "must be below"),
        ({"low": float("nan"), "high": 25}, "low"),
        ({"low": 0, "high": float("inf")}, "high"),
        ({"low": 0, "high": 1, "hysteresis": -0.1}, "hysteresis"),
        ({"low": 0, "high": 1, "min_duration": -1}, "min_duration"),
        ({"low": True, "high": 2}, "low"),
        ({"low": "1", "high": 2}, "low"),
    ],
)
def test_thresholds_validation(kwargs, fragment):
    with pytest.raises(InvalidArgument) as error:
        Thresholds(**kwargs)
    assert fragment in str(error.value)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [({"half_life": 0}, "half_life"), ({"half_life": float("inf")}, "half_life"), ({"warmup": -1}, "warmup"),
     ({"warmup": 2.5}, "warmup"), ({"forget_after": -5}, "forget_after")],
)
def test_params_validation(kwargs, fragment):
    with pytest.raises(InvalidArgument) as error:
        AnalysisParams(**kwargs)
    assert fragment in str(error.value)


def test_defaults_are_the_documented_ones():
    assert LEVELS == ("LOW", "MEDIUM", "HIGH")
    assert DEFAULT_THRESHOLDS["cpu"] == Thresholds(25, 75, 5.0, 1.0)
    assert set(DEFAULT_THRESHOLDS) == {"cpu", "mem", "swap", "disk_used"}
    with pytest.raises(TypeError):
        DEFAULT_THRESHOLDS["cpu"] = Thresholds(1, 2)  # shared default must not be changed by a caller


# --- input validation --------------------------------------------------------------------------


def good_host(**changes):
    host = {"host_id": "web-1", "state": None, "samples": samples_of([10.0, 20.0], "cpu")}
    host.update(changes)
    return host


def bad_state_row(row):
    state = analyze_one(samples_of([10.0, 20.0], "cpu"))["state"]
    state["metrics"]["cpu"] = row
    return state


@pytest.mark.parametrize(
    "hosts, fragment",
    [
        ({"host_id": "x"}, "hosts: expected a list"),
        ([good_host(), "web-2"], "hosts[1]: expected a dict"),
        ([{"state": None, "samples": []}], "hosts[0].host_id: expected a non-empty string"),
        ([good_host(host_id=7)], "hosts[0].host_id"),
        ([good_host(samples={"ts": 1})], "hosts[0].samples: expected a list, got dict (host 'web-1')"),
        ([good_host(samples=[{"seq": 0, "ts": "now", "metrics": {}}])],
         "hosts[0].samples[0].ts: expected a finite number"),
        ([good_host(samples=[{"seq": 0, "ts": float("nan"), "metrics": {}}])], "hosts[0].samples[0].ts"),
        ([good_host(samples=[{"seq": 0, "ts": 5.0, "metrics": {}}, {"seq": 1, "ts": 5.0, "metrics": {}}])],
         "hosts[0].samples[1].ts: 5.0 is not after the previous ts 5.0"),
        ([good_host(samples=[{"seq": "1", "ts": 5.0, "metrics": {}}])], "hosts[0].samples[0].seq: expected an integer"),
        ([good_host(samples=[{"seq": 0, "ts": 5.0, "metrics": [1]}])], "hosts[0].samples[0].metrics: expected a dict"),
        ([good_host(), good_host(samples=[{"seq": 0, "ts": 1.0, "metrics": {"cpu": "abc"}}])],
         "hosts[1].samples[0].metrics['cpu']: expected a finite number, got 'abc'"),
        ([good_host(samples=[{"seq": 0, "ts": 1.0, "metrics": {"cpu": True}}])],
         "hosts[0].samples[0].metrics['cpu']: expected a finite number, got True"),
        ([good_host(samples=[{"seq": 0, "ts": 1.0, "metrics": {"mem": 1.0}},
                             {"seq": 1, "ts": 2.0, "metrics": {"mem": float("inf")}}])],
         "hosts[0].samples[1].metrics['mem']: expected a finite number, got inf"),
        ([good_host(samples=[{"seq": 0, "ts": 1.0, "metrics": {"": 1.0}}])], "metric names must be non-empty strings"),
        ([good_host(state=[1, 2])], "hosts[0].state: expected a dict, sealed state bytes or None, got list"),
        ([good_host(state=b"\xc1")], "hosts[0].state: a sealed state must be one MessagePack value"),
        ([good_host(state=msgpack.packb([1, 2]))], "hosts[0].state: expected a dict, sealed state bytes or None, got list"),
        ([good_host(state={"version": 99, "ts": 1.0, "metrics": {}})], "hosts[0].state.version"),
        ([good_host(state=bad_state_row([1.0] * 3), samples=[])],
         "hosts[0].state.metrics['cpu']: expected a list of 15 numbers, got length 3"),
        ([good_host(state=bad_state_row(None), samples=[])],
         "hosts[0].state.metrics['cpu']: expected a list of 15 numbers, got NoneType"),
        ([good_host(state=bad_state_row([1.0] * 14 + ["x"]), samples=[])],
         "hosts[0].state.metrics['cpu'][14]: expected a finite number, got 'x'"),
        ([good_host(state=bad_state_row([1.0] * 12 + [7.0, -1.0, 0.0]), samples=[])],
         "hosts[0].state.metrics['cpu']: inconsistent"),
        ([good_host(state={"version": 2, "ts": 1.0, "names": "cpu", "rows": b""})],
         "hosts[0].state.names: expected a list of non-empty metric names"),
        ([good_host(state={"version": 2, "ts": 1.0, "names": ["cpu", "cpu"], "rows": bytes(240)})],
         "hosts[0].state.names: metric names must be unique"),
        ([good_host(state={"version": 2, "ts": 1.0, "names": ["cpu"], "rows": bytes(100)})],
         "hosts[0].state.rows: expected 120 bytes (15 float64 per name), got 100 bytes"),
        ([good_host(state={"version": 2, "ts": 1.0, "names": ["cpu"], "rows": [0.0] * 15})],
         "hosts[0].state.rows: expected 120 bytes (15 float64 per name), got list"),
        ([good_host(state={"version": 2, "ts": T0, "names": ["cpu"], "rows": bytes(120)}, samples=[])],
         "hosts[0].state.metrics['cpu']: inconsistent"),
        # sample rows, the form of packed calls: [seq, ts, names, little-endian float64s]
        ([good_host(samples=[[0, 1.0, ["cpu"]]])], "hosts[0].samples[0]: a sample row must be [seq, ts, metric names, "
                                                   "float64 values], got 3 items"),
        ([good_host(samples=[[0, 1.0, "cpu", bytes(8)]])], "hosts[0].samples[0]: a sample row's metric names must be a list"),
        ([good_host(samples=[[0, 1.0, ["cpu", [1]], bytes(16)]])], "metric names must be a list of non-empty strings"),
        ([good_host(samples=[[0, 1.0, ["cpu", "mem"], bytes(8)]])],
         "hosts[0].samples[0]: a sample row's values must be bytes holding one little-endian float64 per distinct metric "
         "name; got 8 bytes for 2 names (2 distinct) (host 'web-1')"),
        ([good_host(samples=[[0, 1.0, ["cpu", "cpu"], bytes(16)]])], "got 16 bytes for 2 names (1 distinct)"),
        ([good_host(samples=[[0, 1.0, ["cpu"], [1.0]]])], "got list for 1 names"),
        ([good_host(samples=[[0, 1.0, ["cpu"], struct.pack("<d", float("nan"))]])],
         "hosts[0].samples[0].metrics['cpu']: expected a finite number, got nan"),
        ([good_host(samples=[["0", 1.0, ["cpu"], bytes(8)]])], "hosts[0].samples[0].seq: expected an integer"),
        ([good_host(samples=[7])], "hosts[0].samples[0]: expected a dict or a [seq, ts, names, values] row, got int"),
        # samples must come after the ones the state has already seen
        ([good_host(state=analyze_one(samples_of([1.0] * 3, "cpu", t0=T0 + 10))["state"])],
         "hosts[0].samples[0].ts: 1700000000.0 is not after the previous ts 1700000012.0"),
    ],
)
def test_validation_errors_name_the_field(hosts, fragment):
    with pytest.raises(InvalidArgument) as error:
        analyze_batch(hosts)
    assert fragment in str(error.value)


def test_validation_of_thresholds_and_params_arguments():
    with pytest.raises(InvalidArgument, match=r"thresholds\['cpu'\]: expected a Thresholds"):
        analyze_batch([good_host()], thresholds={"cpu": (25, 75)})
    with pytest.raises(InvalidArgument, match="params"):
        analyze_batch([good_host()], params={"half_life": 60})


def test_input_is_not_modified():
    host = good_host(samples=mixed_samples(20))
    snapshot = json.dumps(host)
    result = analyze_batch([host])[0]
    assert json.dumps(host) == snapshot
    again = analyze_batch([{"host_id": "web-1", "state": result["state"], "samples": mixed_samples(3, t0=T0 + 100)}])
    assert again[0]["state"] is not result["state"]


@pytest.mark.parametrize("serializer_name", ["JsonObjectSerializer", "MsgPackObjectSerializer", "CBORObjectSerializer"])
def test_compact_results_survive_every_wamp_serializer(serializer_name):
    from autobahn.wamp import serializer

    codec = getattr(serializer, serializer_name)(batched=False)
    result = analyze_one(mixed_samples(20), compact=True)
    [decoded] = codec.unserialize(codec.serialize(result))
    assert decoded == result
    follow = analyze_one(mixed_samples(3, t0=T0 + 100), decoded["state"], compact=True)
    assert follow["state"]["ts"] > result["state"]["ts"]


@pytest.mark.parametrize("compact", [False, True])
def test_hosts_of_one_fleet_share_a_layout_but_keep_their_own_values(compact):
    # Hosts reporting the same metrics are laid out once per batch shape; each must still get exactly what it
    # would alone, whatever order its state lists the metrics in and whichever metrics it has forgotten.
    params = AnalysisParams(forget_after=30.0)
    fleet = [{"host_id": f"h{k}", "state": None, "samples": mixed_samples(12, seed=k)} for k in range(6)]
    first = analyze_batch(fleet, params=params, compact=compact)
    unsorted = dict(reversed(list(analyze_one(mixed_samples(12, seed=9))["state"]["metrics"].items())))
    later = [{"host_id": host["host_id"], "state": result["state"], "samples": mixed_samples(3, seed=k, t0=T0 + 40)}
             for k, (host, result) in enumerate(zip(fleet, first))]
    later[1]["samples"] = [{"seq": 99, "ts": T0 + 45.0, "metrics": {"cpu": 97.0}}]  # the others go past forget_after
    later[2]["state"] = {"version": 1, "ts": T0 + 20.0, "metrics": unsorted}
    later[3]["samples"] = []
    if compact:
        later[4]["state"] = unpack_batch(pack_results([first[4]]))[0]["state"]  # sealed, as the orchestrator keeps it
    together = analyze_batch(later, params=params, compact=compact)
    assert together == [analyze_batch([host], params=params, compact=compact)[0] for host in later]
    assert together[0] != together[5] and together[0]["host_id"] == "h0"
    names = (lambda result: result["state"]["names"]) if compact else (lambda result: list(result["state"]["metrics"]))
    assert names(together[1]) == ["cpu"]  # the rest were forgotten
    assert names(together[2]) == sorted(unsorted)


def test_a_remembered_name_list_does_not_let_a_bad_one_through():
    good = [[0, 1.0, ["cpu", "mem"], bytes(16)]]
    analyze_batch([good_host(samples=good)])
    for names, fragment in ((["cpu", "cpu"], "(1 distinct)"), (["cpu", ""], "non-empty strings"),
                            (["cpu", 1], "non-empty strings")):
        with pytest.raises(InvalidArgument, match=re.escape(fragment)):
            analyze_batch([good_host(samples=[[0, 1.0, names, bytes(16)]])])


def test_a_backlog_of_samples_adds_no_layouts():
    # Layouts are remembered per distinct shape of names, so hosts catching up with 1 to 60 samples each
    # (as after an analyzer outage) share one, instead of one per sample count.
    from components.monitor.analysis import layout

    layout._LAYOUTS.clear()
    samples = samples_of([10.0 + k for k in range(60)], "cpu")
    analyze_batch([{"host_id": f"h{k}", "state": None, "samples": samples[:k + 1]} for k in range(60)])
    assert len(layout._LAYOUTS) == 1
