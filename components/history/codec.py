"""Blocks of one host's samples packed small: timestamps and values quantised, delta-coded, byte-shuffled, zlib-compressed.

A block is `ts` (n ascending epoch seconds) and a values matrix (rows × n, NaN where a row has no
value). Each row has a quantum: values are kept as whole multiples of it (linear rows), or, for
rates spanning decades (`B/s`), as whole multiples of 0.001 of log1p(|value|) (0.1 % relative).
Each row's integers are then either differenced along time (a steady or drifting metric becomes
small numbers) or taken relative to the row's minimum (a noisy metric, whose differences would
spread twice as wide), whichever spans clearly fewer values; the int64 bytes of all rows are
regrouped by significance (all lowest bytes first, ...), so zlib sees long runs of the zero high
bytes. Timestamps are kept to the millisecond, differenced.
"""

import struct
import zlib

import numpy as np

from components.monitor.measure import MEASURE_SCHEMA, family_of

CODEC_VERSION = 1
LOG_SCALE = 1000.0  # rate rows: steps of 0.001 in log1p(value), a relative error under 0.05 %
TS_SCALE = 1000.0  # timestamps kept to the millisecond
# Linear quantum per unit of the measurement schema; "log" rows are rates kept relatively.
QUANTUM_BY_UNIT = {"%": 0.01, "": 0.001, "B/s": "log"}
DEFAULT_QUANTUM = 0.001
_HEADER = struct.Struct("<BII")  # version, rows, samples
DELTA, OFFSET = 0, 1  # how a row's integers are written: differences along time, or relative to the row's minimum


def quantum_of(metric):
    """The quantum a metric's values are kept to: a positive float, or "log" for relative (rate) quantisation."""
    spec = MEASURE_SCHEMA.get(family_of(metric))
    return QUANTUM_BY_UNIT.get(spec["unit"], DEFAULT_QUANTUM) if spec else DEFAULT_QUANTUM


def _shuffled(integers):
    """The int64s of each row with their bytes grouped by significance (a byte shuffle)."""
    integers = np.ascontiguousarray(integers, dtype="<i8")
    return np.ascontiguousarray(integers.view(np.uint8).reshape(*integers.shape, 8).swapaxes(-1, -2))


def _unshuffled(data, shape):
    """The int64s back from `_shuffled`'s bytes."""
    grouped = np.frombuffer(data, dtype=np.uint8).reshape(*shape[:-1], 8, shape[-1]).swapaxes(-1, -2)
    return np.ascontiguousarray(grouped).view("<i8").reshape(shape)


def _steps(quanta):
    """(linear quantum per row, 1 for log rows; mask of the log rows) as arrays."""
    log = np.array([quantum == "log" for quantum in quanta], dtype=bool)
    return np.array([1.0 if quantum == "log" else quantum for quantum in quanta]), log


def quantise(values, quanta):
    """int64 matrix of values (rows × n; NaN as the previous value, and a mask) kept to each row's quantum."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    missing = np.isnan(values)
    filled = _forward_filled(values, missing)
    steps, log = _steps(quanta)
    scaled = filled / steps[:, None]
    if log.any():
        scaled[log] = np.sign(filled[log]) * np.log1p(np.abs(filled[log])) * LOG_SCALE
    return np.rint(scaled).astype(np.int64), missing


def dequantise(integers, missing, quanta):
    """The float matrix `quantise` stands for (NaN where missing)."""
    steps, log = _steps(quanta)
    values = integers * steps[:, None]
    if log.any():
        scaled = integers[log] / LOG_SCALE
        values[log] = np.sign(scaled) * np.expm1(np.abs(scaled))
    values[missing] = np.nan
    return values


def _forward_filled(values, missing):
    """values with each NaN replaced by the row's previous value (0 before the first): missing deltas cost nothing."""
    if not missing.any():
        return values
    n = values.shape[-1]
    index = np.where(~missing, np.arange(n), 0)
    np.maximum.accumulate(index, axis=-1, out=index)
    filled = np.take_along_axis(values, index, axis=-1)
    return np.where(np.isnan(filled), 0.0, filled)


def _row_forms(integers):
    """(mode per row, base per row, the rows as written): OFFSET rows minus their minimum, DELTA rows differenced."""
    deltas = np.diff(integers, axis=1, prepend=0)
    if integers.shape[1] < 2:
        return np.zeros(integers.shape[0], np.uint8), np.zeros(integers.shape[0], np.int64), deltas
    low, high = integers.min(axis=1), integers.max(axis=1)
    steps = deltas[:, 1:]
    offset = (steps.max(axis=1) - steps.min(axis=1)) >= 0.5 * (high - low)
    bases = np.where(offset, low, 0)
    return offset.astype(np.uint8), bases, np.where(offset[:, None], integers - bases[:, None], deltas)


def pack_block(ts, values, quanta, level=6):
    """One compressed blob of a block: ts (n) and values (len(quanta) × n, NaN = no value)."""
    ts = np.asarray(ts, dtype=np.float64)
    rows, n = len(quanta), len(ts)
    integers, missing = quantise(np.reshape(values, (rows, n)), quanta)
    modes, bases, written = _row_forms(integers)
    stamps = np.diff(np.rint(ts * TS_SCALE).astype(np.int64), prepend=0)
    parts = [_HEADER.pack(CODEC_VERSION, rows, n), _shuffled(stamps).tobytes(), modes.tobytes(),
             bases.astype("<i8").tobytes(), _shuffled(written).tobytes(), np.packbits(missing, axis=None).tobytes()]
    return zlib.compress(b"".join(parts), level)


def unpack_block(blob, quanta):
    """(ts, values) back from `pack_block`; values within half a quantum (0.05 % for log rows) of what went in."""
    data = zlib.decompress(blob)
    version, rows, n = _HEADER.unpack_from(data)
    if version != CODEC_VERSION:
        raise ValueError(f"block codec version {version} is not {CODEC_VERSION}")
    if rows != len(quanta):
        raise ValueError(f"block has {rows} rows, its layout names {len(quanta)}")
    offset = _HEADER.size
    stamps = np.cumsum(_unshuffled(data[offset:offset + 8 * n], (n,)))
    offset += 8 * n
    modes = np.frombuffer(data[offset:offset + rows], dtype=np.uint8)
    offset += rows
    bases = np.frombuffer(data[offset:offset + 8 * rows], dtype="<i8")
    offset += 8 * rows
    written = _unshuffled(data[offset:offset + 8 * rows * n], (rows, n))
    offset += 8 * rows * n
    integers = np.where(modes[:, None] == OFFSET, written + bases[:, None], np.cumsum(written, axis=1))
    missing = np.unpackbits(np.frombuffer(data[offset:], dtype=np.uint8), count=rows * n).reshape(rows, n).astype(bool)
    return stamps / TS_SCALE, dequantise(integers, missing, quanta)
