"""Streaming per-metric analysis of host samples: levels, mean, p95, trend and anomaly score, from a compact state.

Every function here is pure: `analyze_batch` takes each host's new samples and the state it
returned last time, and gives back the analysis and the next state. The orchestrator keeps
the state between calls; feeding samples in chunks gives exactly the same results as
feeding them all at once.

All running statistics weigh a sample by 2 ** (-age / half_life), with age in seconds, so
irregular sampling intervals are handled by decaying with the real time difference.

Per-metric state is one flat list of `STATE_WIDTH` floats (see `_N` ... `_SINCE` below):

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
or, in the compact wire form, `{"version": 2, "ts": ..., "names": [name, ...], "rows": bytes}` with
the rows as little-endian float64, one row of 15 per name. Both are accepted as input; the
compact form is what `analyze_batch(..., compact=True)` returns. It carries the same floats,
but as one binary value per host instead of 15 numbers per metric, so the router and the
orchestrator pass it through without decoding and re-encoding every number.

A compact result is `{"host_id", "state" (version 2), "level", "anomaly": [score per name],
"changes"}`: everything else a full result holds is a function of the state, and
`describe_compact` rebuilds it exactly (the orchestrator does so only for hosts someone watches).

A whole batch can travel packed: the list of host entries (and the list of results) as one
MessagePack binary value (`pack_batch` / `unpack_batch`). The router then decodes and re-encodes
one value per call instead of some fifty per host (docs/benchmarks.md has what that saves).
Packed results carry each state sealed (`pack_results`): the state itself as one MessagePack
binary value, which the orchestrator keeps and sends back without ever decoding it; every
function here that takes a state also takes it sealed. A sample may also come as a row
`[seq, ts, [metric names], little-endian float64 values as bytes]`, one value per name: the form
the orchestrator's windows keep (components/window.py), which packs in a third of the time.

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
"""

import math
import numbers
import re
from dataclasses import dataclass
from itertools import chain
from types import MappingProxyType

import msgpack
import numpy as np

from components.mesh.errors import InvalidArgument
from components.monitor.window import row_values

LEVELS = ("LOW", "MEDIUM", "HIGH")
STATE_VERSION = 1
COMPACT_STATE_VERSION = 2
_ROW_BYTES = 8 * 15
STATE_WIDTH = 15
MAX_ABS_VALUE = 1e100  # keeps squares and co-moments far from float overflow
MAX_ABS_TS = 1e15  # seconds; anything larger is a unit mistake (ms or ns epoch)

(_N, _LAST_TS, _VALUE, _W, _MEAN, _VAR_M2, _T_AGE, _TT_M2, _TX_M2,
 _P95, _MEDIAN, _MAD, _LEVEL, _CAND, _SINCE) = range(STATE_WIDTH)

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

_FAMILY_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def _finite_real(value):
    """The value as a float if it is a finite real number (bool excluded), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        number = float(value)
    except (OverflowError, ValueError, TypeError):
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class Thresholds:
    """Level boundaries for one metric family: LOW < low <= MEDIUM < high <= HIGH."""

    low: float
    high: float
    hysteresis: float = 5.0  # to leave a level downwards the value must go this far below its lower boundary
    min_duration: float = 1.0  # seconds a new level must hold before it is adopted

    def __post_init__(self):
        for name in ("low", "high", "hysteresis", "min_duration"):
            raw = getattr(self, name)
            number = _finite_real(raw)
            if number is None:
                raise InvalidArgument(f"thresholds {name}: expected a finite number, got {raw!r}")
            object.__setattr__(self, name, number)
        if not self.low < self.high:
            raise InvalidArgument(f"thresholds: low ({self.low:g}) must be below high ({self.high:g})")
        if self.hysteresis < 0:
            raise InvalidArgument(f"thresholds hysteresis: must be >= 0, got {self.hysteresis:g}")
        if self.min_duration < 0:
            raise InvalidArgument(f"thresholds min_duration: must be >= 0, got {self.min_duration:g}")


DEFAULT_THRESHOLDS = MappingProxyType(
    {"cpu": Thresholds(25, 75), "mem": Thresholds(70, 90), "swap": Thresholds(50, 80), "disk_used": Thresholds(80, 95)}
)


@dataclass(frozen=True)
class AnalysisParams:
    """Time constants of the running statistics."""

    half_life: float = 60.0  # seconds, for the mean, trend, p95 and anomaly baseline
    warmup: int = 10  # samples a metric must have seen before its anomaly score can be non-zero
    forget_after: float = 600.0  # seconds without a value after which a metric is dropped (and restarts if seen again)

    def __post_init__(self):
        for name in ("half_life", "forget_after"):
            raw = getattr(self, name)
            number = _finite_real(raw)
            if number is None or number <= 0:
                raise InvalidArgument(f"analysis params {name}: expected a finite number > 0, got {raw!r}")
            object.__setattr__(self, name, number)
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, numbers.Integral) or self.warmup < 0:
            raise InvalidArgument(f"analysis params warmup: expected an integer >= 0, got {self.warmup!r}")
        object.__setattr__(self, "warmup", int(self.warmup))


def parse_thresholds(text):
    """Parse 'cpu=25:75,mem=70:90:5:2' (low:high[:hysteresis[:min_duration]]) into thresholds; raises InvalidArgument naming the bad part."""
    if not isinstance(text, str):
        raise InvalidArgument(f"thresholds: expected a string like 'cpu=25:75,mem=70:90:5:2', got {text!r}")
    parsed = {}
    if not text.strip():
        return parsed
    for part in text.split(","):
        item = part.strip()
        family, sep, spec = item.partition("=")
        family = family.strip()
        if not sep or not _FAMILY_RE.match(family):
            raise InvalidArgument(f"thresholds part {item!r}: expected FAMILY=LOW:HIGH[:HYSTERESIS[:MIN_DURATION]]")
        if family in parsed:
            raise InvalidArgument(f"thresholds part {item!r}: family {family!r} given twice")
        fields = [field.strip() for field in spec.split(":")]
        if not 2 <= len(fields) <= 4:
            raise InvalidArgument(f"thresholds part {item!r}: expected 2 to 4 numbers separated by ':'")
        numbers_ = []
        for field in fields:
            try:
                number = float(field)
            except ValueError:
                raise InvalidArgument(f"thresholds part {item!r}: {field!r} is not a number") from None
            numbers_.append(number)
        try:
            parsed[family] = Thresholds(*numbers_)
        except InvalidArgument as exc:
            raise InvalidArgument(f"thresholds part {item!r}: {exc}") from None
    return parsed


def _bad(path, problem, host_id=None):
    return InvalidArgument(f"{path}: {problem}" + (f" (host {host_id!r})" if host_id is not None else ""))


def _check_ts(value, path, host_id):
    if type(value) is float and -MAX_ABS_TS <= value <= MAX_ABS_TS:
        return value
    number = _finite_real(value)
    if number is None or abs(number) > MAX_ABS_TS:
        raise _bad(path, f"expected a finite number of seconds, got {value!r}", host_id)
    return number


def _load_state(state, path, host_id):
    """The host's last ts, metric names (a tuple) and raw rows (float64 bytes, or lists) from its state; rows are
    checked later."""
    if state is None:
        return None, (), []
    if isinstance(state, bytes):
        state = _unseal(state, path, host_id)
    if not isinstance(state, dict):
        raise _bad(path, f"expected a dict, sealed state bytes or None, got {type(state).__name__}", host_id)
    if state.get("version") not in (STATE_VERSION, COMPACT_STATE_VERSION):
        raise _bad(f"{path}.version", f"expected {STATE_VERSION} or {COMPACT_STATE_VERSION}, got {state.get('version')!r}",
                   host_id)
    last_ts = state.get("ts")
    if last_ts is not None:
        last_ts = _check_ts(last_ts, f"{path}.ts", host_id)
    if state["version"] == COMPACT_STATE_VERSION:
        names, block = _unpack_rows(state, path, host_id)
        if names and last_ts is None:
            raise _bad(f"{path}.ts", "expected a number when metrics are present, got None", host_id)
        return last_ts, names, block
    metrics = state.get("metrics")
    if not isinstance(metrics, dict):
        raise _bad(f"{path}.metrics", f"expected a dict, got {type(metrics).__name__}", host_id)
    if not set(map(type, metrics)) <= {str} or "" in metrics:
        name = next(name for name in metrics if not isinstance(name, str) or not name)
        raise _bad(f"{path}.metrics[{name!r}]", "metric names must be non-empty strings", host_id)
    if metrics and last_ts is None:
        raise _bad(f"{path}.ts", "expected a number when metrics are present, got None", host_id)
    return last_ts, tuple(metrics), list(metrics.values())


# Metric name lists already found to be distinct non-empty strings, each kept as one tuple. A fleet's hosts
# share a handful of lists, and looking one up costs a fraction of checking it again for every host.
_CHECKED_NAMES = {}
_CACHE_LIMIT = 4096


def _checked_names(names):
    """names as a shared tuple if it is a list or tuple of distinct non-empty strings, else None."""
    if not isinstance(names, (list, tuple)):
        return None
    key = tuple(names)
    try:
        checked = _CHECKED_NAMES.get(key)
    except TypeError:  # an unhashable item, so not a name
        return None
    if checked is None:
        if not set(map(type, key)) <= {str} or "" in key or len(set(key)) != len(key):
            return None
        if len(_CHECKED_NAMES) >= _CACHE_LIMIT:
            _CHECKED_NAMES.clear()
        checked = _CHECKED_NAMES[key] = key
    return checked


def _unpack_rows(state, path, host_id):
    """(names, rows as float64 bytes) from a compact state; the rows are checked with the others later."""
    names, rows = state.get("names"), state.get("rows")
    checked = _checked_names(names) if isinstance(names, list) else None
    if checked is None:
        if not isinstance(names, list) or not set(map(type, names)) <= {str} or "" in names:
            raise _bad(f"{path}.names", "expected a list of non-empty metric names", host_id)
        raise _bad(f"{path}.names", "metric names must be unique", host_id)
    if not isinstance(rows, bytes) or len(rows) != len(checked) * _ROW_BYTES:
        got = f"{len(rows)} bytes" if isinstance(rows, bytes) else type(rows).__name__
        raise _bad(f"{path}.rows", f"expected {len(checked) * _ROW_BYTES} bytes ({STATE_WIDTH} float64 per name), "
                                   f"got {got}", host_id)
    return checked, rows


def _pack_rows(matrix):
    """Rows of floats as the compact state's little-endian float64 bytes."""
    return np.ascontiguousarray(matrix, dtype="<f8").tobytes()


def _unpack_rows_block(data):
    """The compact state's float64 bytes as a matrix of STATE_WIDTH columns (the inverse of _pack_rows)."""
    return np.frombuffer(data, dtype="<f8").reshape(-1, STATE_WIDTH)


def pack_batch(items):
    """A list of host entries or results as one MessagePack binary value, which a router forwards as one value."""
    return msgpack.packb(items, use_bin_type=True)


def pack_results(results):
    """Results packed for the wire with each state sealed (one binary value the caller stores and returns undecoded)."""
    return pack_batch([dict(result, state=msgpack.packb(result["state"], use_bin_type=True)) for result in results])


def _unpack(data, path, problem, host_id=None):
    """The one MessagePack value in data; InvalidArgument "path: problem (why)" if data is not one."""
    try:
        return msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.UnpackException) as error:
        raise _bad(path, f"{problem} ({error})", host_id) from None


def _unseal(state, path="state", host_id=None):
    """A sealed state's dict (checked by the caller); InvalidArgument naming `path` if the bytes are not one value."""
    return _unpack(state, path, "a sealed state must be one MessagePack value", host_id)


def unpack_batch(data, path="hosts"):
    """The list a pack_batch value holds; InvalidArgument naming `path` if the bytes are not one MessagePack array."""
    items = _unpack(data, path, "packed bytes are not one MessagePack value")
    if not isinstance(items, list):
        raise InvalidArgument(f"{path}: packed bytes must hold a list, got {type(items).__name__}")
    return items


def _row_parts(row, path, host_id):
    """(seq, ts, names, values) of a sample row [seq, ts, names, float64 bytes]; InvalidArgument naming what is wrong."""
    if len(row) != 4:
        raise _bad(path, f"a sample row must be [seq, ts, metric names, float64 values], got {len(row)} items", host_id)
    seq, ts, names, values = row
    checked = _checked_names(names)
    if checked is None or not isinstance(values, bytes) or len(values) != 8 * len(checked):
        if not isinstance(names, (list, tuple)) or not set(map(type, names)) <= {str} or "" in names:
            raise _bad(path, "a sample row's metric names must be a list of non-empty strings", host_id)
        got = f"{len(values)} bytes" if isinstance(values, bytes) else type(values).__name__
        raise _bad(path, f"a sample row's values must be bytes holding one little-endian float64 per distinct metric "
                         f"name; got {got} for {len(names)} names ({len(set(names))} distinct)", host_id)
    return seq, ts, checked, row_values(checked, values)


def _state_row_problem(row, last_ts):
    """Why one state row is unusable, as (item index or None, message), or None if it is fine."""
    if not isinstance(row, (list, tuple, np.ndarray)) or len(row) != STATE_WIDTH:
        got = f"length {len(row)}" if isinstance(row, (list, tuple, np.ndarray)) else type(row).__name__
        return None, f"expected a list of {STATE_WIDTH} numbers, got {got}"
    floats = []
    for index, item in enumerate(row):
        number = _finite_real(item)
        if number is None:
            return index, f"expected a finite number, got {item!r}"
        floats.append(number)
    if (floats[_N] < 1 or floats[_W] < 1 or floats[_VAR_M2] < 0 or floats[_TT_M2] < 0 or floats[_MAD] < 0
            or floats[_T_AGE] < 0 or floats[_LEVEL] not in (-1, 0, 1, 2) or floats[_CAND] not in (-1, 0, 1, 2)
            or floats[_LAST_TS] > last_ts):
        return None, "inconsistent analysis state (not produced by this analyzer version)"
    return None


def _state_matrix(groups, last_ts, where):
    """The hosts' state rows (one group per host) as one float matrix, checked in bulk; the slow per-row check only
    runs to name a bad row."""
    matrix = None
    if groups and set(map(type, groups)) == {bytes}:  # compact states: float64 bytes per host
        # its rows are iterated below only to name a bad one
        matrix = raw_rows = _unpack_rows_block(b"".join(groups))
    else:
        raw_rows = list(chain.from_iterable(
            _unpack_rows_block(group) if isinstance(group, bytes) else group
            for group in groups))
        if (set(map(type, raw_rows)) <= {list, tuple} and set(map(len, raw_rows)) <= {STATE_WIDTH}
                and set(map(type, chain.from_iterable(raw_rows))) <= {float, int}):
            try:
                matrix = np.fromiter(chain.from_iterable(raw_rows), np.float64, count=len(raw_rows) * STATE_WIDTH)
            except OverflowError:
                matrix = None
    if matrix is not None:
        matrix = matrix.reshape(-1, STATE_WIDTH)
        levels = np.isin(matrix[:, _LEVEL], (-1, 0, 1, 2)) & np.isin(matrix[:, _CAND], (-1, 0, 1, 2))
        with np.errstate(invalid="ignore"):
            good = (np.isfinite(matrix).all(axis=1) & levels & (matrix[:, _N] >= 1) & (matrix[:, _W] >= 1)
                    & (matrix[:, [_VAR_M2, _TT_M2, _MAD, _T_AGE]] >= 0).all(axis=1)
                    & (matrix[:, _LAST_TS] <= np.array(last_ts, dtype=np.float64)))
        if good.all():
            return matrix
    for position, row in enumerate(raw_rows):
        problem = _state_row_problem(row, last_ts[position])
        if problem is not None:
            index, message = problem
            path, host_id = where(position)
            raise _bad(path + (f"[{index}]" if index is not None else ""), message, host_id)
    if matrix is None:
        matrix = np.array([[float(item) for item in row] for row in raw_rows], dtype=np.float64)
    return matrix.reshape(-1, STATE_WIDTH)


class _Batch:
    """The validated batch laid out for vectorised work: one row per (host, metric), one column per sample step.

    A host's rows are consecutive, from `host_base[h]`, in the order of its layout's names.
    """

    def __init__(self):
        self.names, self.host_of_row = [], None  # per row
        self.host_ids, self.host_layout, self.host_width, self.host_base = [], [], None, None  # per host
        self.host_ts, self.host_seq, self.host_last, self.host_samples = [], [], [], None  # per host
        self.obs_row, self.obs_col, self.obs_val = None, None, []  # per observed value
        self.state_rows, self.state = None, None  # rows that came with a state, and their floats


class _Layout:
    """Where one host's values go, given its state's metric names and the distinct name lists of its samples: the
    same for every host of a fleet whose machines report the same metrics, so it is worked out once and looked up."""

    __slots__ = ("names", "shape_rows", "order", "sorted_names", "in_order")

    def __init__(self, names, shape_rows):
        self.names = tuple(names)  # row order: the state's names, then new ones as first seen
        self.shape_rows = shape_rows  # per distinct sample shape (names in order), the row of each of its values
        self.order = sorted(range(len(names)), key=names.__getitem__)  # rows in name order, as results list them
        self.sorted_names = [names[row] for row in self.order]
        self.in_order = self.order == list(range(len(names)))


# (state names, each distinct sample shape in order of first appearance) -> _Layout. Keyed by distinct shapes, not
# by samples, so a backlog of many samples per host adds no entries.
_LAYOUTS = {}


def _layout_of(key, first_sample, path, host_id):
    """The layout for a host whose state names and sample shapes are `key` (shape i first seen in sample
    first_sample[i]); a new metric name must be a non-empty string (the names of rows and states are checked before)."""
    layout = _LAYOUTS.get(key)
    if layout is not None:
        return layout
    names = list(key[0])
    row_of = dict(zip(names, range(len(names))))
    shape_rows = []
    for j, sample_names in zip(first_sample, key[1:]):
        ids = [row_of.get(name) for name in sample_names]
        if None in ids:
            for k, name in enumerate(sample_names):
                if ids[k] is None:
                    if not isinstance(name, str) or not name:
                        raise _bad(f"{path}.samples[{j}].metrics[{name!r}]", "metric names must be non-empty strings",
                                   host_id)
                    ids[k] = row_of[name] = len(names)
                    names.append(name)
        shape_rows.append(np.array(ids, dtype=np.intp))
    if len(_LAYOUTS) >= _CACHE_LIMIT:
        _LAYOUTS.clear()
    layout = _LAYOUTS[key] = _Layout(names, shape_rows)
    return layout


def _check_values(batch):
    """All observed values as a float array; bulk-checked, with the slow per-value check only to name a bad one."""
    values = batch.obs_val
    array = None
    if set(map(type, values)) <= {float, int}:
        try:
            array = np.array(values, dtype=np.float64)
        except OverflowError:
            array = None
    if array is not None and (np.abs(array) <= MAX_ABS_VALUE).all():  # also false for NaN
        return array
    for k, value in enumerate(values):
        number = _finite_real(value)
        if number is None or abs(number) > MAX_ABS_VALUE:
            row = batch.obs_row[k]
            h = batch.host_of_row[row]
            path = f"hosts[{h}].samples[{batch.obs_col[k]}].metrics[{batch.names[row]!r}]"
            raise _bad(path, f"expected a finite number, got {value!r}", batch.host_ids[h])
    return np.array([float(value) for value in values], dtype=np.float64)


def _positions_within(sizes):
    """Each item's position within its group, for consecutive groups of the given sizes: [2, 3] -> [0, 1, 0, 1, 2]."""
    return np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)


def _gather(hosts):
    """Validate the batch and lay it out as a _Batch."""
    if not isinstance(hosts, list):
        raise InvalidArgument(f"hosts: expected a list, got {type(hosts).__name__}")
    batch = _Batch()
    obs_val, layouts = batch.obs_val, batch.host_layout
    sample_rows = []  # per sample, the rows of its values (from its host's first)
    known_of_host = []  # per host: how many of its rows come with its state
    state_raw, state_last = [], []  # per host with a state: its rows, its ts
    for h, host in enumerate(hosts):
        path = f"hosts[{h}]"
        if not isinstance(host, dict):
            raise InvalidArgument(f"{path}: expected a dict, got {type(host).__name__}")
        host_id = host.get("host_id")
        if not isinstance(host_id, str) or not host_id:
            raise InvalidArgument(f"{path}.host_id: expected a non-empty string, got {host_id!r}")
        batch.host_ids.append(host_id)
        last_ts, known, rows = _load_state(host.get("state"), f"{path}.state", host_id)
        samples = host.get("samples")
        if not isinstance(samples, list):
            raise _bad(f"{path}.samples", f"expected a list, got {type(samples).__name__}", host_id)
        known_of_host.append(len(known))
        if known:
            state_raw.append(rows)
            state_last.append(last_ts)
        shapes, first_sample, sample_shapes = {}, [], []  # distinct name tuples in order, where each came first
        times, seqs = [], []
        previous = last_ts
        for j, sample in enumerate(samples):
            # A row comes as its parts; a dict's metric names and values are its keys and values.
            if isinstance(sample, dict):
                ts, seq, metrics = sample.get("ts"), sample.get("seq"), sample.get("metrics")
                sample_names, sample_values = metrics, metrics.values() if isinstance(metrics, dict) else None
            elif isinstance(sample, (list, tuple)):
                seq, ts, sample_names, sample_values = _row_parts(sample, f"{path}.samples[{j}]", host_id)
            else:
                raise _bad(f"{path}.samples[{j}]", f"expected a dict or a [seq, ts, names, values] row, got "
                                                   f"{type(sample).__name__}", host_id)
            if type(ts) is not float or not -MAX_ABS_TS <= ts <= MAX_ABS_TS:  # inline fast path of _check_ts
                ts = _check_ts(ts, f"{path}.samples[{j}].ts", host_id)
            if previous is not None and not ts > previous:
                raise _bad(f"{path}.samples[{j}].ts", f"{ts!r} is not after the previous ts {previous!r}", host_id)
            previous = ts
            if type(seq) is not int and (isinstance(seq, bool) or not isinstance(seq, numbers.Integral)):
                raise _bad(f"{path}.samples[{j}].seq", f"expected an integer, got {seq!r}", host_id)
            if sample_values is None:
                raise _bad(f"{path}.samples[{j}].metrics", f"expected a dict, got {type(metrics).__name__}", host_id)
            shape = sample_names if type(sample_names) is tuple else tuple(sample_names)
            index = shapes.setdefault(shape, len(shapes))
            if index == len(first_sample):
                first_sample.append(j)
            sample_shapes.append(index)
            obs_val.extend(sample_values)
            times.append(ts)
            seqs.append(int(seq))
        layout = _layout_of((known, *shapes), first_sample, path, host_id)
        layouts.append(layout)
        sample_rows.extend(map(layout.shape_rows.__getitem__, sample_shapes))
        batch.host_ts.append(times)
        batch.host_seq.append(seqs)
        batch.host_last.append(previous)

    # A host's rows follow the previous host's: the per-row and per-value arrays come from the layouts at once.
    widths = np.fromiter((len(layout.names) for layout in layouts), np.intp, count=len(layouts))
    batch.host_width, batch.host_base = widths, np.cumsum(widths) - widths
    batch.names = names = list(chain.from_iterable(layout.names for layout in layouts))
    batch.host_of_row = host_of_row = np.repeat(np.arange(len(layouts)), widths)
    known_of_host = np.array(known_of_host, dtype=np.intp)
    batch.state_rows = np.nonzero(_positions_within(widths) < np.repeat(known_of_host, widths))[0]
    state_ts = np.repeat(np.array(state_last, dtype=np.float64), known_of_host[known_of_host > 0])
    batch.host_samples = samples_of_host = np.fromiter(map(len, batch.host_ts), np.intp, count=len(layouts))
    values_of_sample = np.fromiter(map(len, sample_rows), np.intp, count=len(sample_rows))
    batch.obs_row = (np.concatenate(sample_rows) if sample_rows else np.zeros(0, np.intp)) + np.repeat(
        np.repeat(batch.host_base, samples_of_host), values_of_sample)
    batch.obs_col = np.repeat(_positions_within(samples_of_host), values_of_sample)

    def where(position):
        row = batch.state_rows[position]
        h = host_of_row[row]
        return f"hosts[{h}].state.metrics[{names[row]!r}]", batch.host_ids[h]

    batch.state = _state_matrix(state_raw, state_ts, where)
    batch.obs_val = _check_values(batch)
    return batch


def _thresholds_table(names, thresholds):
    """Per-row (low, high, hysteresis, min_duration) and whether the row's family has thresholds at all."""
    try:
        items = list(thresholds.items())
    except AttributeError:
        raise InvalidArgument(
            f"thresholds: expected a mapping of family to Thresholds, got {type(thresholds).__name__}") from None
    for family, value in items:
        if not isinstance(value, Thresholds):
            raise InvalidArgument(f"thresholds[{family!r}]: expected a Thresholds, got {type(value).__name__}")
    # index 0 is "no thresholds"; families are looked up once per distinct name, not once per row
    index_of = {family: k + 1 for k, (family, _) in enumerate(items)}
    table = np.array([(0.0, 0.0, 0.0, 0.0)] + [(t.low, t.high, t.hysteresis, t.min_duration) for _, t in items])
    by_name = {}
    for name in names:
        if name not in by_name:
            by_name[name] = index_of.get(name.split(".", 1)[0], 0)
    rows = np.fromiter(map(by_name.__getitem__, names), np.intp, count=len(names))
    return table[rows], rows > 0


def _step(st, x, t, thr, has_thr, params, fresh):
    """Advance the state rows `st` (modified in place) by one observation each; returns (scores, changes).

    changes is a list of (row positions, previous level, new level) arrays, in the order adopted.
    """
    n, last_ts, w = st[:, _N], st[:, _LAST_TS], st[:, _W]
    mean, median, mad = st[:, _MEAN], st[:, _MEDIAN], st[:, _MAD]
    gap = t - last_ts
    # a metric seen for the first time, or silent for longer than forget_after, starts over
    fresh = fresh | (gap > params.forget_after)

    # score against the baseline as it was before this sample, so a spike cannot hide itself
    spread_old = np.sqrt(st[:, _VAR_M2] / np.maximum(w, 1.0))
    floor = np.maximum(np.maximum(_MAD_FLOOR_REL * np.abs(median), _MAD_FLOOR_SPREAD * spread_old), _MAD_FLOOR_ABS)
    score = _Z_MAD * (x - median) / np.maximum(mad, floor)
    score = np.where(fresh | (n < max(params.warmup, 1)), 0.0, score)

    decay = np.exp2(-np.maximum(gap, 0.0) / params.half_life)
    w0 = w * decay
    w1 = w0 + 1.0
    gain = 1.0 / w1
    # weighted Welford updates of the value moments and of the time/value regression sums
    dx = x - mean
    mean1 = mean + dx * gain
    var_m2 = st[:, _VAR_M2] * decay + dx * (x - mean1)
    dt = gap + st[:, _T_AGE]
    t_age = dt * (w0 * gain)
    tt_m2 = st[:, _TT_M2] * decay + dt * t_age
    tx_m2 = st[:, _TX_M2] * decay + dt * (x - mean1)

    # stochastic quantiles: step by gain * k * spread, never past the sample that pulls them
    var_m2 = np.maximum(var_m2, 0.0)
    spread = np.sqrt(var_m2 * gain)

    def quantile(q, target, k, p):
        up = np.minimum(q + gain * k * spread * p, target)
        down = np.maximum(q - gain * k * spread * (1.0 - p), target)
        return np.where(target > q, up, np.where(target < q, down, q))

    p95 = quantile(st[:, _P95], x, _K95, 0.95)
    median1 = quantile(median, x, _K50, 0.5)
    mad1 = quantile(mad, np.abs(x - median), _K_MAD, 0.5)
    # after a gap the decayed history can weigh less than this one sample; the quantiles then
    # move towards what this sample alone would say by the missing weight, as the mean does
    pull = np.clip(1.0 - w0, 0.0, 1.0)
    p95 = p95 + (x - p95) * pull
    median1 = median1 + (x - median1) * pull
    mad1 = mad1 * (1.0 - pull)

    new = np.empty_like(st)
    new[:, _N] = n + 1.0
    new[:, _LAST_TS] = t
    new[:, _VALUE] = x
    new[:, _W] = w1
    new[:, _MEAN] = mean1
    new[:, _VAR_M2] = var_m2
    new[:, _T_AGE] = t_age
    new[:, _TT_M2] = np.maximum(tt_m2, 0.0)
    new[:, _TX_M2] = tx_m2
    new[:, _P95] = p95
    new[:, _MEDIAN] = median1
    new[:, _MAD] = np.maximum(mad1, 0.0)
    if fresh.any():
        new[fresh] = 0.0
        new[fresh, _N] = 1.0
        new[fresh, _LAST_TS] = t[fresh]
        new[fresh, _VALUE] = x[fresh]
        new[fresh, _W] = 1.0
        new[fresh, _MEAN] = x[fresh]
        new[fresh, _P95] = x[fresh]
        new[fresh, _MEDIAN] = x[fresh]

    changes = []
    level, cand, since = st[:, _LEVEL], st[:, _CAND], st[:, _SINCE]
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
    new[:, _LEVEL] = level
    new[:, _CAND] = cand
    new[:, _SINCE] = np.where(cand >= 0, since, 0.0)
    st[:] = new
    return score, changes


def _trend(st):
    tt = st[:, _TT_M2]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # _clean zeroes what overflowed
        slope = np.where(tt > 0, st[:, _TX_M2] / np.where(tt > 0, tt, 1.0), 0.0) * 60.0
    return slope


def _clean(values):
    """Plain floats with any non-finite number (only possible with pathological timing) replaced by 0."""
    return np.where(np.isfinite(values), values, 0.0).tolist()


def analyze_batch(hosts, thresholds=DEFAULT_THRESHOLDS, params=AnalysisParams(), compact=False):
    """Analyse each host's new samples against its state; returns one result per host, in order (compact: wire form)."""
    if not isinstance(params, AnalysisParams):
        raise InvalidArgument(f"params: expected AnalysisParams, got {type(params).__name__}")
    batch = _gather(hosts)
    names, host_of_row, host_ts = batch.names, batch.host_of_row, batch.host_ts
    rows_total = len(names)
    thr, has_thr = _thresholds_table(names, thresholds)
    steps = max((len(times) for times in host_ts), default=0)
    host_of = np.asarray(host_of_row, dtype=np.intp)

    st = np.zeros((rows_total, STATE_WIDTH))
    st[:, _LEVEL] = -1.0
    st[:, _CAND] = -1.0
    fresh = np.ones(rows_total, dtype=bool)
    st[batch.state_rows] = batch.state
    fresh[batch.state_rows] = False

    values = np.full((rows_total, steps), np.nan)
    values[batch.obs_row, batch.obs_col] = batch.obs_val
    observed = ~np.isnan(values)
    samples_of_host = batch.host_samples
    host_times = np.zeros((len(host_ts), steps))
    host_times[np.repeat(np.arange(len(host_ts)), samples_of_host), _positions_within(samples_of_host)] = list(
        chain.from_iterable(host_ts))

    score_last = np.zeros(rows_total)
    change_log = []  # (row, step, previous level, new level), in the order adopted
    for j in range(steps):
        rows = np.nonzero(observed[:, j])[0]
        if rows.size == 0:
            continue
        if rows.size == rows_total:  # the usual one-sample tick: skip the gather/scatter copies
            score_last, changes = _step(st, values[:, j], host_times[host_of, j], thr, has_thr, params, fresh)
            fresh[:] = False
        else:
            sub = st[rows]
            score, changes = _step(sub, values[rows, j], host_times[host_of[rows], j], thr[rows], has_thr[rows],
                                   params, fresh[rows])
            st[rows] = sub
            fresh[rows] = False
            score_last[rows] = score
        for positions, previous, new in changes:
            change_log.extend(zip(rows[positions].tolist(), [j] * len(positions), previous.tolist(), new.tolist()))

    # the anomaly describes the host's latest sample: a metric absent from it has nothing to score
    last_step = (samples_of_host - 1)[host_of]
    seen_last = np.zeros(rows_total, dtype=bool)
    has_last = np.nonzero(last_step >= 0)[0]
    seen_last[has_last] = observed[has_last, last_step[has_last]]
    anomaly = np.where(seen_last, score_last, 0.0)
    host_end = np.array([np.inf if ts is None else ts for ts in batch.host_last])
    alive = ~(host_end[host_of] - st[:, _LAST_TS] > params.forget_after)
    # thresholds may have been removed since the state was written
    st[~has_thr, _LEVEL] = -1.0
    st[~has_thr, _CAND] = -1.0
    st[~has_thr, _SINCE] = 0.0

    # A host's level is the highest of its live metrics'; a host whose metrics all live keeps its layout's order.
    widths, base = batch.host_width, batch.host_base
    host_level = np.full(len(host_ts), -1.0)
    if rows_total:
        filled = widths > 0
        host_level[filled] = np.maximum.reduceat(np.where(alive, st[:, _LEVEL], -1.0), base[filled])
    dead_before = np.concatenate(([0], np.cumsum(~alive)))
    all_alive = (dead_before[base + widths] == dead_before[base]).tolist()
    host_level_l, base_l, alive_l = host_level.astype(int).tolist(), base.tolist(), alive.tolist()
    if compact:
        anomaly_l, state_l, entries = _clean(anomaly), None, None
        st_bytes = _pack_rows(st)
    else:
        state_l = st.tolist()
        level_names = [LEVELS[int(level)] if level >= 0 else None for level in st[:, _LEVEL].tolist()]
        columns = zip(st[:, _VALUE].tolist(), level_names, _clean(st[:, _MEAN]), _clean(st[:, _P95]),
                      _clean(_trend(st)), _clean(anomaly))
        entries = [{"value": value, "level": level, "mean": mean, "p95": p95, "trend": trend, "anomaly": score}
                   for value, level, mean, p95, trend, score in columns]

    changes_by_host = [[] for _ in host_ts]
    for row, j, before, after in change_log:
        h = host_of_row[row]
        changes_by_host[h].append((j, names[row], {
            "metric": names[row],
            "previous": LEVELS[int(before)],
            "level": LEVELS[int(after)],
            "ts": host_ts[h][j],
            "seq": batch.host_seq[h][j],
            "value": float(values[row, j]),
        }))

    results = []
    for h, host_id in enumerate(batch.host_ids):
        layout, first = batch.host_layout[h], base_l[h]
        if all_alive[h]:
            live_names = list(layout.sorted_names)
            rows = None if layout.in_order else [first + row for row in layout.order]
        else:
            rows = [first + row for row in layout.order if alive_l[first + row]]
            live_names = [names[row] for row in rows]
        level = host_level_l[h]
        # sort is stable, so two changes of one metric at one sample keep their order
        changes = ([entry for _, _, entry in sorted(changes_by_host[h], key=lambda item: (item[0], item[1]))]
                   if changes_by_host[h] else [])
        result = {"host_id": host_id, "level": LEVELS[level] if level >= 0 else None, "changes": changes}
        if compact:
            if rows is None:  # the host's rows as they lie, in name order: slices, not a gather
                end = first + len(live_names)
                packed, scores = st_bytes[first * _ROW_BYTES:end * _ROW_BYTES], anomaly_l[first:end]
            else:
                packed, scores = _pack_rows(st[rows]), [anomaly_l[row] for row in rows]
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


def _finite_or_zero(value):
    return value if math.isfinite(value) else 0.0


def describe_compact(result):
    """The level and per-metric entries (value, level, mean, p95, trend, anomaly) of a compact result, exactly as
    analyze_batch(compact=False) gives them."""
    state = result["state"]
    if isinstance(state, bytes):
        state = _unseal(state)
    rows = _unpack_rows_block(state["rows"]).tolist()
    metrics = {}
    for name, row, score in zip(state["names"], rows, result["anomaly"]):
        tt = row[_TT_M2]
        trend = row[_TX_M2] / tt * 60.0 if tt > 0 else 0.0
        level = int(row[_LEVEL])
        metrics[name] = {"value": row[_VALUE], "level": LEVELS[level] if level >= 0 else None,
                         "mean": _finite_or_zero(row[_MEAN]), "p95": _finite_or_zero(row[_P95]),
                         "trend": _finite_or_zero(trend), "anomaly": score}
    return {"level": result["level"], "metrics": metrics}
