"""The streaming step: every state row advanced by one observation, vectorised over rows; and the trend it implies."""

import math

import numpy as np

from components.monitor.analysis.state import (CANDIDATE, LAST_TS, LEVEL, MAD, MEAN, MEDIAN, N, P95, SINCE, T_AGE,
                                               TT_M2, TX_M2, VALUE, VAR_M2, WEIGHT)

# Newton-like step sizes for the stochastic quantiles: 1 / density at the quantile, in units of
# the standard deviation, under a normal assumption; this makes the estimator behave like an
# exponentially weighted sample quantile instead of crawling (too small) or oscillating (too big).
_Z95 = 1.6448536269514722
_K95 = math.sqrt(2 * math.pi) * math.exp(_Z95 * _Z95 / 2)
_K50 = math.sqrt(2 * math.pi)
_Z_MAD = 0.6744897501960817
_K_MAD = math.sqrt(2 * math.pi) * math.exp(_Z_MAD * _Z_MAD / 2) / 2

# The MAD is floored at 1% of |median|, 10% of the weighted standard deviation and 1e-3, so a
# flat series does not divide by zero, a wiggle under 1% of the level of a flat series scores
# below 1, and a metric that is usually flat but sometimes bursts is judged by its bursts.
_MAD_FLOOR_REL = 0.01
_MAD_FLOOR_SPREAD = 0.1
_MAD_FLOOR_ABS = 1e-3


def step(st, x, t, thr, has_thr, params, fresh):
    """Advance the state rows `st` (modified in place) by one observation each; returns (scores, changes).

    x and t are each row's value and ts, thr and has_thr its thresholds (thresholds_table), fresh whether it has no
    state yet. changes is a list of (row positions, previous level, new level) arrays, in the order adopted.
    """
    gap = t - st[:, LAST_TS]
    # a metric seen for the first time, or silent for longer than forget_after, starts over
    fresh = fresh | (gap > params.forget_after)
    score = _anomaly(st, x, fresh, params.warmup)
    new = np.empty_like(st)
    new[:, N] = st[:, N] + 1.0
    new[:, LAST_TS] = t
    new[:, VALUE] = x
    decay = np.exp2(-np.maximum(gap, 0.0) / params.half_life)
    w0 = st[:, WEIGHT] * decay
    new[:, WEIGHT] = w1 = w0 + 1.0
    gain = 1.0 / w1
    _update_moments(st, new, x, gap, decay, w0, gain)
    _update_quantiles(st, new, x, w0, gain)
    if fresh.any():
        _start_over(new, fresh, x, t)
    changes = _update_levels(st, new, x, t, thr, has_thr, fresh)
    st[:] = new
    return score, changes


def _anomaly(st, x, fresh, warmup):
    """Each value's robust z-score against the baseline as it was before it, so a spike cannot hide itself."""
    spread_old = np.sqrt(st[:, VAR_M2] / np.maximum(st[:, WEIGHT], 1.0))
    median = st[:, MEDIAN]
    floor = np.maximum(np.maximum(_MAD_FLOOR_REL * np.abs(median), _MAD_FLOOR_SPREAD * spread_old), _MAD_FLOOR_ABS)
    score = _Z_MAD * (x - median) / np.maximum(st[:, MAD], floor)
    return np.where(fresh | (st[:, N] < max(warmup, 1)), 0.0, score)


def _update_moments(st, new, x, gap, decay, w0, gain):
    """Weighted Welford updates of the value moments and of the time/value regression sums, into `new`."""
    mean = st[:, MEAN]
    dx = x - mean
    new[:, MEAN] = mean1 = mean + dx * gain
    new[:, VAR_M2] = np.maximum(st[:, VAR_M2] * decay + dx * (x - mean1), 0.0)
    dt = gap + st[:, T_AGE]
    new[:, T_AGE] = t_age = dt * (w0 * gain)
    new[:, TT_M2] = np.maximum(st[:, TT_M2] * decay + dt * t_age, 0.0)
    new[:, TX_M2] = st[:, TX_M2] * decay + dt * (x - mean1)


def _quantile_step(q, target, gain, k, spread, p):
    """The estimate q of quantile p moved towards the target by gain * k * spread, never past it."""
    up = np.minimum(q + gain * k * spread * p, target)
    down = np.maximum(q - gain * k * spread * (1.0 - p), target)
    return np.where(target > q, up, np.where(target < q, down, q))


def _update_quantiles(st, new, x, w0, gain):
    """The stochastic p95, median and MAD after one more value, into `new` (whose variance is already updated)."""
    spread = np.sqrt(new[:, VAR_M2] * gain)
    median = st[:, MEDIAN]
    p95 = _quantile_step(st[:, P95], x, gain, _K95, spread, 0.95)
    median1 = _quantile_step(median, x, gain, _K50, spread, 0.5)
    mad1 = _quantile_step(st[:, MAD], np.abs(x - median), gain, _K_MAD, spread, 0.5)
    # after a gap the decayed history can weigh less than this one sample; the quantiles then
    # move towards what this sample alone would say by the missing weight, as the mean does
    pull = np.clip(1.0 - w0, 0.0, 1.0)
    new[:, P95] = p95 + (x - p95) * pull
    new[:, MEDIAN] = median1 + (x - median1) * pull
    new[:, MAD] = np.maximum(mad1 * (1.0 - pull), 0.0)


def _start_over(new, fresh, x, t):
    """Reset the statistics of the `fresh` rows of `new` to those of their one value."""
    new[fresh] = 0.0
    new[fresh, N] = 1.0
    new[fresh, LAST_TS] = t[fresh]
    new[fresh, VALUE] = x[fresh]
    new[fresh, WEIGHT] = 1.0
    new[fresh, MEAN] = x[fresh]
    new[fresh, P95] = x[fresh]
    new[fresh, MEDIAN] = x[fresh]


def _update_levels(st, new, x, t, thr, has_thr, fresh):
    """The level, candidate and since columns after one more value, into `new`; returns the changes adopted."""
    changes = []
    level, cand, since = st[:, LEVEL], st[:, CANDIDATE], st[:, SINCE]
    low, high, hyst, min_dur = thr[:, 0], thr[:, 1], thr[:, 2], thr[:, 3]
    raw = (x >= low).astype(float) + (x >= high)
    sticky = (x >= low - hyst).astype(float) + (x >= high - hyst)
    starting = has_thr & (fresh | (level < 0))
    level = np.where(starting, raw, np.where(has_thr, level, -1.0))
    cand = np.where(has_thr & ~starting, cand, -1.0)
    # upward moves need the raw boundary, downward moves need boundary - hysteresis
    target = np.where(has_thr, np.minimum(np.maximum(level, raw), sticky), -1.0)
    moving = has_thr & ~starting & (target != level)
    direction = np.sign(target - level)
    restart = moving & ((cand < 0) | (np.sign(cand - level) != direction))
    further = moving & ~restart & (np.abs(target - level) > np.abs(cand - level))
    nearer = moving & ~restart & (np.abs(target - level) < np.abs(cand - level))
    # the value went past the candidate (LOW -> MEDIUM candidate, now HIGH): the candidate's level has
    # still held since `since`, so adopt it if due and let the further level start its own timer;
    # if not due, keep the candidate and its timer rather than crediting HIGH with MEDIUM's time
    stepwise = further & (t - since >= min_dur)
    if stepwise.any():
        changes.append((np.nonzero(stepwise)[0], level[stepwise], cand[stepwise]))
        level = np.where(stepwise, cand, level)
    cand = np.where(restart | nearer | stepwise, target, np.where(moving, cand, -1.0))
    since = np.where(restart | stepwise, t, since)
    adopt = (cand >= 0) & (t - since >= min_dur)
    if adopt.any():
        changes.append((np.nonzero(adopt)[0], level[adopt], cand[adopt]))
        level = np.where(adopt, cand, level)
        cand = np.where(adopt, -1.0, cand)
    new[:, LEVEL] = level
    new[:, CANDIDATE] = cand
    new[:, SINCE] = np.where(cand >= 0, since, 0.0)
    return changes


def trend(st):
    """Per state row, the slope of its weighted least-squares line through (ts, value), per minute (0 if undefined)."""
    tt = st[:, TT_M2]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # clean zeroes what overflowed
        slope = np.divide(st[:, TX_M2], tt, out=np.zeros(len(tt)), where=tt > 0)
        slope *= 60.0
    return slope


def clean(values):
    """Plain floats with any non-finite number (only possible with pathological timing) replaced by 0."""
    return np.where(np.isfinite(values), values, 0.0).tolist()
