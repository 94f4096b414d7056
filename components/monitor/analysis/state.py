"""A host's analysis state: the columns of a metric's row, its open, compact and sealed forms, and their checks."""

from itertools import chain

import numpy as np

from components.monitor.analysis.checks import bad, check_ts, checked_names, finite_real
from components.monitor.analysis.wire import unseal

LEVELS = ("LOW", "MEDIUM", "HIGH")
STATE_VERSION = 1  # {"version", "ts", "metrics": {name: row}}
COMPACT_STATE_VERSION = 2  # {"version", "ts", "names": [name, ...], "rows": float64 bytes}
STATE_WIDTH = 15
ROW_BYTES = 8 * STATE_WIDTH

# The columns of a metric's state row (the package docstring says what each holds).
(N, LAST_TS, VALUE, WEIGHT, MEAN, VAR_M2, T_AGE, TT_M2, TX_M2,
 P95, MEDIAN, MAD, LEVEL, CANDIDATE, SINCE) = range(STATE_WIDTH)

_LEVEL_CODES = (-1, 0, 1, 2)  # no thresholds, then the index into LEVELS


def pack_rows(matrix):
    """Rows of floats as the compact state's little-endian float64 bytes."""
    return np.ascontiguousarray(matrix, dtype="<f8").tobytes()


def unpack_rows(data):
    """The compact state's float64 bytes as a matrix of STATE_WIDTH columns (the inverse of pack_rows)."""
    return np.frombuffer(data, dtype="<f8").reshape(-1, STATE_WIDTH)


def load_state(state, path, host_id):
    """(last ts, metric names as a tuple, raw rows) of a host's state, open, compact or sealed.

    The rows stay as given (float64 bytes, or lists) until state_matrix checks them with the other hosts'.
    """
    if state is None:
        return None, (), []
    if isinstance(state, bytes):
        state = unseal(state, path, host_id)
    if not isinstance(state, dict):
        raise bad(path, f"expected a dict, sealed state bytes or None, got {type(state).__name__}", host_id)
    version = state.get("version")
    if version not in (STATE_VERSION, COMPACT_STATE_VERSION):
        raise bad(f"{path}.version", f"expected {STATE_VERSION} or {COMPACT_STATE_VERSION}, got {version!r}", host_id)
    last_ts = state.get("ts")
    if last_ts is not None:
        last_ts = check_ts(last_ts, f"{path}.ts", host_id)
    if version == COMPACT_STATE_VERSION:
        names, rows = _compact_parts(state, path, host_id)
    else:
        names, rows = _open_parts(state, path, host_id)
    if names and last_ts is None:
        raise bad(f"{path}.ts", "expected a number when metrics are present, got None", host_id)
    return last_ts, names, rows


def _compact_parts(state, path, host_id):
    """(names, rows as float64 bytes) from a compact state."""
    names, rows = state.get("names"), state.get("rows")
    checked = checked_names(names) if isinstance(names, list) else None
    if checked is None:
        if not isinstance(names, list) or not set(map(type, names)) <= {str} or "" in names:
            raise bad(f"{path}.names", "expected a list of non-empty metric names", host_id)
        raise bad(f"{path}.names", "metric names must be unique", host_id)
    if not isinstance(rows, bytes) or len(rows) != len(checked) * ROW_BYTES:
        got = f"{len(rows)} bytes" if isinstance(rows, bytes) else type(rows).__name__
        raise bad(f"{path}.rows", f"expected {len(checked) * ROW_BYTES} bytes ({STATE_WIDTH} float64 per name), "
                                  f"got {got}", host_id)
    return checked, rows


def _open_parts(state, path, host_id):
    """(names, rows as given) from an open state's metrics dict."""
    metrics = state.get("metrics")
    if not isinstance(metrics, dict):
        raise bad(f"{path}.metrics", f"expected a dict, got {type(metrics).__name__}", host_id)
    if not set(map(type, metrics)) <= {str} or "" in metrics:
        name = next(name for name in metrics if not isinstance(name, str) or not name)
        raise bad(f"{path}.metrics[{name!r}]", "metric names must be non-empty strings", host_id)
    return tuple(metrics), list(metrics.values())


def state_matrix(groups, last_ts, where):
    """The hosts' state rows (one group of rows per host) as one checked float matrix.

    last_ts holds each row's host ts. Checked in bulk; the slow per-row check only runs to name a bad row, at the
    (path, host id) `where(row position)` gives.
    """
    matrix, raw_rows = _bulk_matrix(groups)
    if matrix is not None:
        matrix = matrix.reshape(-1, STATE_WIDTH)
        if _all_consistent(matrix, np.array(last_ts, dtype=np.float64)):
            return matrix
    for position, row in enumerate(raw_rows):
        problem = _state_row_problem(row, last_ts[position])
        if problem is not None:
            index, message = problem
            path, host_id = where(position)
            raise bad(path + (f"[{index}]" if index is not None else ""), message, host_id)
    if matrix is None:
        matrix = np.array([[float(item) for item in row] for row in raw_rows], dtype=np.float64)
    return matrix.reshape(-1, STATE_WIDTH)


def _bulk_matrix(groups):
    """(the rows as one float array, or None where they are not all plain floats of the right count; the rows)."""
    if groups and set(map(type, groups)) == {bytes}:  # compact states only: one buffer, iterated only to name a bad row
        matrix = unpack_rows(b"".join(groups))
        return matrix, matrix
    raw_rows = list(chain.from_iterable(unpack_rows(group) if isinstance(group, bytes) else group for group in groups))
    if (set(map(type, raw_rows)) <= {list, tuple} and set(map(len, raw_rows)) <= {STATE_WIDTH}
            and set(map(type, chain.from_iterable(raw_rows))) <= {float, int}):
        try:
            return np.fromiter(chain.from_iterable(raw_rows), np.float64, count=len(raw_rows) * STATE_WIDTH), raw_rows
        except OverflowError:
            pass
    return None, raw_rows


def _all_consistent(matrix, last_ts):
    """Whether every row of the matrix is one this analyzer could have written, for hosts last seen at last_ts."""
    levels = np.isin(matrix[:, LEVEL], _LEVEL_CODES) & np.isin(matrix[:, CANDIDATE], _LEVEL_CODES)
    with np.errstate(invalid="ignore"):
        good = (np.isfinite(matrix).all(axis=1) & levels & (matrix[:, N] >= 1) & (matrix[:, WEIGHT] >= 1)
                & (matrix[:, [VAR_M2, TT_M2, MAD, T_AGE]] >= 0).all(axis=1)
                & (matrix[:, LAST_TS] <= last_ts))
    return good.all()


def _state_row_problem(row, last_ts):
    """Why one state row is unusable, as (item index or None, message), or None if it is fine."""
    if not isinstance(row, (list, tuple, np.ndarray)) or len(row) != STATE_WIDTH:
        got = f"length {len(row)}" if isinstance(row, (list, tuple, np.ndarray)) else type(row).__name__
        return None, f"expected a list of {STATE_WIDTH} numbers, got {got}"
    floats = []
    for index, item in enumerate(row):
        number = finite_real(item)
        if number is None:
            return index, f"expected a finite number, got {item!r}"
        floats.append(number)
    if (floats[N] < 1 or floats[WEIGHT] < 1 or floats[VAR_M2] < 0 or floats[TT_M2] < 0 or floats[MAD] < 0
            or floats[T_AGE] < 0 or floats[LEVEL] not in _LEVEL_CODES or floats[CANDIDATE] not in _LEVEL_CODES
            or floats[LAST_TS] > last_ts):
        return None, "inconsistent analysis state (not produced by this analyzer version)"
    return None
