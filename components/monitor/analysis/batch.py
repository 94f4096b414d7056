"""A whole call: every host's samples run through the streaming step at once, and the results it answers with."""

from itertools import chain

import numpy as np

from components.mesh.errors import InvalidArgument
from components.monitor.analysis.gather import gather, positions_within
from components.monitor.analysis.state import (CANDIDATE, COMPACT_STATE_VERSION, LAST_TS, LEVEL, LEVELS, MEAN, P95,
                                               ROW_BYTES, SINCE, STATE_VERSION, STATE_WIDTH, VALUE, pack_rows,
                                               unpack_rows)
from components.monitor.analysis.statistics import clean, step, trend
from components.monitor.analysis.thresholds import DEFAULT_THRESHOLDS, AnalysisParams, thresholds_table
from components.monitor.analysis.wire import unseal


def analyze_batch(hosts, thresholds=DEFAULT_THRESHOLDS, params=AnalysisParams(), compact=False):
    """Analyse each host's new samples against its state; returns one result per host, in order (compact: wire form)."""
    if not isinstance(params, AnalysisParams):
        raise InvalidArgument(f"params: expected AnalysisParams, got {type(params).__name__}")
    batch = gather(hosts)
    thr, has_thr = thresholds_table(batch.names, thresholds)
    st, values, score, change_log = _run(batch, thr, has_thr, params)
    host_of = batch.host_of_row
    # the anomaly describes the host's latest sample: a metric absent from it has nothing to score
    last_step = (batch.host_samples - 1)[host_of]
    seen_last = np.zeros(len(st), dtype=bool)
    has_last = np.nonzero(last_step >= 0)[0]
    seen_last[has_last] = ~np.isnan(values[has_last, last_step[has_last]])
    anomaly = np.where(seen_last, score, 0.0)
    host_end = np.array([np.inf if ts is None else ts for ts in batch.host_last])
    alive = ~(host_end[host_of] - st[:, LAST_TS] > params.forget_after)
    # thresholds may have been removed since the state was written
    st[~has_thr, LEVEL] = -1.0
    st[~has_thr, CANDIDATE] = -1.0
    st[~has_thr, SINCE] = 0.0
    return _results(batch, st, anomaly, alive, _changes_by_host(batch, change_log, values), compact)


def describe_compact(result):
    """The level and per-metric entries of a compact result, exactly as analyze_batch(compact=False) gives them."""
    state = result["state"]
    if isinstance(state, bytes):
        state = unseal(state)
    entries = _metric_entries(unpack_rows(state["rows"]), result["anomaly"])
    return {"level": result["level"], "metrics": dict(zip(state["names"], entries))}


def _run(batch, thr, has_thr, params):
    """Every state row after all its samples, one step per sample position; returns (state rows, the values as a
    rows x steps grid with NaN where a row has none, the score of each row's last value, the level change log).

    The change log lists (row, step, previous level, new level) in the order adopted.
    """
    rows_total, host_of = len(batch.names), batch.host_of_row
    st = np.zeros((rows_total, STATE_WIDTH))
    st[:, LEVEL] = -1.0
    st[:, CANDIDATE] = -1.0
    fresh = np.ones(rows_total, dtype=bool)
    st[batch.state_rows] = batch.state
    fresh[batch.state_rows] = False
    values, host_times = _grids(batch)
    observed = ~np.isnan(values)
    score_last = np.zeros(rows_total)
    change_log = []
    for j in range(values.shape[1]):
        rows = np.nonzero(observed[:, j])[0]
        if rows.size == 0:
            continue
        if rows.size == rows_total:  # the usual one-sample tick: skip the gather/scatter copies
            score_last, changes = step(st, values[:, j], host_times[host_of, j], thr, has_thr, params, fresh)
            fresh[:] = False
        else:
            sub = st[rows]
            score, changes = step(sub, values[rows, j], host_times[host_of[rows], j], thr[rows], has_thr[rows],
                                  params, fresh[rows])
            st[rows] = sub
            fresh[rows] = False
            score_last[rows] = score
        for positions, previous, new in changes:
            change_log.extend(zip(rows[positions].tolist(), [j] * len(positions), previous.tolist(), new.tolist()))
    return st, values, score_last, change_log


def _grids(batch):
    """(each row's value at each step, NaN where it has none; each host's ts at each step)."""
    steps = max((len(times) for times in batch.host_ts), default=0)
    values = np.full((len(batch.names), steps), np.nan)
    values[batch.obs_row, batch.obs_col] = batch.obs_val
    samples_of_host = batch.host_samples
    host_times = np.zeros((len(batch.host_ts), steps))
    host_times[np.repeat(np.arange(len(batch.host_ts)), samples_of_host), positions_within(samples_of_host)] = list(
        chain.from_iterable(batch.host_ts))
    return values, host_times


def _changes_by_host(batch, change_log, values):
    """Per host, its level changes as result entries, ordered by sample, then metric name, then as adopted."""
    names, host_of_row, by_host = batch.names, batch.host_of_row, [[] for _ in batch.host_ids]
    for row, j, before, after in change_log:
        h = host_of_row[row]
        by_host[h].append((j, names[row], {
            "metric": names[row],
            "previous": LEVELS[int(before)],
            "level": LEVELS[int(after)],
            "ts": batch.host_ts[h][j],
            "seq": batch.host_seq[h][j],
            "value": float(values[row, j]),
        }))
    # sort is stable, so two changes of one metric at one sample keep their order
    return [[entry for _, _, entry in sorted(changes, key=lambda item: (item[0], item[1]))] if changes else []
            for changes in by_host]


def _host_summary(batch, st, alive):
    """Per host: its level's name (the highest of its live metrics', None if none has one), and whether all its
    metrics live."""
    widths, base = batch.host_width, batch.host_base
    host_level = np.full(len(batch.host_ids), -1.0)
    if len(st):
        filled = widths > 0
        host_level[filled] = np.maximum.reduceat(np.where(alive, st[:, LEVEL], -1.0), base[filled])
    dead_before = np.concatenate(([0], np.cumsum(~alive)))
    all_alive = (dead_before[base + widths] == dead_before[base]).tolist()
    return [LEVELS[level] if level >= 0 else None for level in host_level.astype(int).tolist()], all_alive


def _results(batch, st, anomaly, alive, changes, compact):
    """One result per host from the final state rows; a host whose metrics all live keeps its layout's order."""
    host_level, all_alive = _host_summary(batch, st, alive)
    base, alive_l, names = batch.host_base.tolist(), alive.tolist(), batch.names
    if compact:
        anomaly_l, st_bytes = clean(anomaly), pack_rows(st)
    else:
        state_l, entries = st.tolist(), _metric_entries(st, clean(anomaly))
    results = []
    for h, host_id in enumerate(batch.host_ids):
        layout, first = batch.host_layout[h], base[h]
        if all_alive[h]:
            live_names = list(layout.sorted_names)
            rows = None if layout.in_order else [first + row for row in layout.order]
        else:
            rows = [first + row for row in layout.order if alive_l[first + row]]
            live_names = [names[row] for row in rows]
        result = {"host_id": host_id, "level": host_level[h], "changes": changes[h]}
        if compact:
            if rows is None:  # the host's rows as they lie, in name order: slices, not a gather
                end = first + len(live_names)
                packed, scores = st_bytes[first * ROW_BYTES:end * ROW_BYTES], anomaly_l[first:end]
            else:
                packed, scores = pack_rows(st[rows]), [anomaly_l[row] for row in rows]
            result["state"] = {"version": COMPACT_STATE_VERSION, "ts": batch.host_last[h],
                               "names": live_names, "rows": packed}
            result["anomaly"] = scores
        else:
            live = list(zip(live_names, range(first, first + len(live_names)) if rows is None else rows))
            result["state"] = {"version": STATE_VERSION, "ts": batch.host_last[h],
                               "metrics": {name: state_l[row] for name, row in live}}
            result["metrics"] = {name: entries[row] for name, row in live}
        results.append(result)
    return results


def _metric_entries(rows, anomaly):
    """Per state row, the entry a full result gives its metric: value, level, mean, p95, trend, and its anomaly."""
    levels = [LEVELS[int(level)] if level >= 0 else None for level in rows[:, LEVEL].tolist()]
    means, p95s, trends = clean(np.array((rows[:, MEAN], rows[:, P95], trend(rows))))
    columns = zip(rows[:, VALUE].tolist(), levels, means, p95s, trends, anomaly)
    return [{"value": value, "level": level, "mean": mean, "p95": p95, "trend": slope, "anomaly": score}
            for value, level, mean, p95, slope, score in columns]
