"""Streaming per-metric analysis of host samples: levels, mean, p95, trend and anomaly score, from a compact state.

Every function here is pure: `analyze_batch` takes each host's new samples and the state it
returned last time, and gives back the analysis and the next state. The orchestrator keeps
the state between calls; feeding samples in chunks gives exactly the same results as
feeding them all at once.

All running statistics weigh a sample by 2 ** (-age / half_life), with age in seconds, so
irregular sampling intervals are handled by decaying with the real time difference.

Per-metric state is one flat row of `STATE_WIDTH` floats (the column constants of state.py):

    0  n          samples seen (drives the anomaly warm-up)
    1  last_ts    ts of the latest observation (absolute seconds)
    2  value      latest value
    3  weight     decayed sum of sample weights, W
    4  mean       weighted mean of the values
    5  var_m2     decayed co-moment sum w (x - mean)^2
    6  t_age      last_ts - weighted mean time; keeps time relative so epoch ts lose no precision
    7  tt_m2      decayed co-moment sum w (t - mean_t)^2
    8  tx_m2      decayed co-moment sum w (t - mean_t) (x - mean)
    9  p95        stochastic 95th percentile estimate
    10 median     stochastic median estimate (anomaly baseline)
    11 mad        stochastic median absolute deviation estimate (anomaly scale)
    12 level      current level index (0 LOW, 1 MEDIUM, 2 HIGH; -1 when the family has no thresholds)
    13 candidate  level waiting for its minimum duration, -1 if none
    14 since      ts at which the candidate appeared

The host state is `{"version": 1, "ts": latest sample ts or None, "metrics": {name: [15 floats]}}`,
or, in the compact form, `{"version": 2, "ts": ..., "names": [name, ...], "rows": bytes}` with
the rows as little-endian float64, one row of 15 per name. Both are accepted as input; the
compact form is what `analyze_batch(..., compact=True)` returns: the same floats as one binary
value per host, which the router and the orchestrator pass through without decoding every number.

A compact result is `{"host_id", "state" (version 2), "level", "anomaly": [score per name],
"changes"}`: everything else a full result holds is a function of the state, and
`describe_compact` rebuilds it exactly (the orchestrator does so only for hosts someone watches).

A whole batch can travel packed: the list of host entries (and the list of results) as one
MessagePack binary value (`pack_batch` / `unpack_batch`), so the router decodes and re-encodes
one value per call. Packed results carry each state sealed (`pack_results`): the state itself as
one MessagePack binary value, which the orchestrator keeps and sends back without decoding it;
every function here that takes a state also takes it sealed. A sample may also come as a row
`[seq, ts, [metric names], little-endian float64 values as bytes]`, one value per name: the form
the orchestrator's windows keep (components/monitor/window.py).

How each output is made, per metric:

- level: the first value sets it directly. Then the value gives a target relative to the current
  level: up needs value >= boundary, down needs value < boundary - hysteresis, otherwise the
  level stays (so 74, 76, 74, ... around 75 never flaps). A target other than the current level
  becomes the candidate, timed from the sample where it first appeared; it is adopted, and a
  change reported, once ts - since >= min_duration. A target back at the current level drops the
  candidate; a target in the other direction restarts it; a target between the current level and
  the candidate (HIGH candidate from LOW, value now MEDIUM) takes over the candidate's timer; a
  target past the candidate (MEDIUM candidate from LOW, value now HIGH) adopts the candidate if
  it is due and becomes the next candidate from this sample, else waits behind the candidate.
- mean: weighted mean, each sample weighing 2 ** (-age / half_life).
- p95 and the median/MAD baseline: stochastic quantile estimators. Each step is
  gain * k * spread, where gain = 1 / W (so the first samples move it like an average of few
  values and later ones like a window of the half-life), spread is the weighted standard
  deviation and k the inverse normal density at the quantile; a step never passes the sample.
- trend: slope of the weighted least-squares line through (ts, value), per minute.
- anomaly: 0.6745 * (value - median) / max(MAD, floor), against the baseline as it was before the
  value; 0 for the first `warmup` samples of a metric, and 0 when the metric is absent from the
  host's latest sample or the call brings no samples for the host (there is nothing new to score;
  this is the one output a call without samples does not repeat from the previous call).

A metric absent from a sample is not observed there; it keeps its last value and level and is
dropped after `forget_after` seconds without values (if it comes back it starts as new).

Modules: thresholds (what a call may tune), state (the row's columns and the state's forms),
wire (MessagePack packing and sealing), checks (shared input checks), layout and gather (a call's
hosts validated and laid out as rows), statistics (the streaming step and the trend), batch
(`analyze_batch` and `describe_compact`).
"""

from components.monitor.analysis.batch import analyze_batch, describe_compact
from components.monitor.analysis.state import LEVELS, STATE_WIDTH
from components.monitor.analysis.thresholds import DEFAULT_THRESHOLDS, AnalysisParams, Thresholds, parse_thresholds
from components.monitor.analysis.wire import pack_batch, pack_results, unpack_batch

__all__ = [
    "DEFAULT_THRESHOLDS",
    "LEVELS",
    "STATE_WIDTH",
    "AnalysisParams",
    "Thresholds",
    "analyze_batch",
    "describe_compact",
    "pack_batch",
    "pack_results",
    "parse_thresholds",
    "unpack_batch",
]
