"""A call's hosts validated and laid out for vectorised work: one row per (host, metric), one column per step."""

import numbers
from itertools import chain

import numpy as np

from components.mesh.errors import InvalidArgument
from components.monitor.analysis.checks import MAX_ABS_TS, MAX_ABS_VALUE, bad, check_ts, checked_names, finite_real
from components.monitor.analysis.layout import layout_of
from components.monitor.analysis.state import load_state, state_matrix
from components.monitor.window import row_values


class Batch:
    """The validated batch laid out for vectorised work: one row per (host, metric), one column per sample step.

    A host's rows are consecutive, from `host_base[h]`, in the order of its layout's names.
    """

    def __init__(self):
        self.names, self.host_of_row = [], None  # per row
        self.host_ids, self.host_layout, self.host_width, self.host_base = [], [], None, None  # per host
        self.host_ts, self.host_seq, self.host_last, self.host_samples = [], [], [], None  # per host
        self.obs_row, self.obs_col, self.obs_val = None, None, []  # per observed value
        self.state_rows, self.state = None, None  # rows that came with a state, and their floats


def positions_within(sizes):
    """Each item's position within its group, for consecutive groups of the given sizes: [2, 3] -> [0, 1, 0, 1, 2]."""
    return np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)


def gather(hosts):
    """Validate the batch and lay it out as a Batch."""
    if not isinstance(hosts, list):
        raise InvalidArgument(f"hosts: expected a list, got {type(hosts).__name__}")
    batch = Batch()
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
        last_ts, known, rows = load_state(host.get("state"), f"{path}.state", host_id)
        samples = host.get("samples")
        if not isinstance(samples, list):
            raise bad(f"{path}.samples", f"expected a list, got {type(samples).__name__}", host_id)
        known_of_host.append(len(known))
        if known:
            state_raw.append(rows)
            state_last.append(last_ts)
        shapes, first_sample, sample_shapes = _read_samples(batch, samples, last_ts, path, host_id)
        layout = layout_of((known, *shapes), first_sample, path, host_id)
        batch.host_layout.append(layout)
        sample_rows.extend(map(layout.shape_rows.__getitem__, sample_shapes))

    known_of_host = np.array(known_of_host, dtype=np.intp)
    _index_rows(batch, sample_rows, known_of_host)
    state_ts = np.repeat(np.array(state_last, dtype=np.float64), known_of_host[known_of_host > 0])
    batch.state = state_matrix(state_raw, state_ts, lambda position: _state_row_path(batch, position))
    batch.obs_val = _check_values(batch)
    return batch


def _read_samples(batch, samples, previous, path, host_id):
    """Check one host's samples (after its state's ts `previous`) and add their values, times and seqs to the batch.

    Returns the host's distinct sample shapes (name tuple -> index, in order of first appearance), the sample each
    shape first appeared in, and each sample's shape index.
    """
    shapes, first_sample, sample_shapes = {}, [], []
    times, seqs, obs_val = [], [], batch.obs_val
    for j, sample in enumerate(samples):
        # A row comes as its parts; a dict's metric names and values are its keys and values.
        if isinstance(sample, dict):
            ts, seq, metrics = sample.get("ts"), sample.get("seq"), sample.get("metrics")
            sample_names, sample_values = metrics, metrics.values() if isinstance(metrics, dict) else None
        elif isinstance(sample, (list, tuple)):
            seq, ts, sample_names, sample_values = _row_parts(sample, f"{path}.samples[{j}]", host_id)
        else:
            raise bad(f"{path}.samples[{j}]", f"expected a dict or a [seq, ts, names, values] row, got "
                                              f"{type(sample).__name__}", host_id)
        if type(ts) is not float or not -MAX_ABS_TS <= ts <= MAX_ABS_TS:  # inline fast path of check_ts
            ts = check_ts(ts, f"{path}.samples[{j}].ts", host_id)
        if previous is not None and not ts > previous:
            raise bad(f"{path}.samples[{j}].ts", f"{ts!r} is not after the previous ts {previous!r}", host_id)
        previous = ts
        if type(seq) is not int and (isinstance(seq, bool) or not isinstance(seq, numbers.Integral)):
            raise bad(f"{path}.samples[{j}].seq", f"expected an integer, got {seq!r}", host_id)
        if sample_values is None:
            raise bad(f"{path}.samples[{j}].metrics", f"expected a dict, got {type(metrics).__name__}", host_id)
        shape = sample_names if type(sample_names) is tuple else tuple(sample_names)
        index = shapes.setdefault(shape, len(shapes))
        if index == len(first_sample):
            first_sample.append(j)
        sample_shapes.append(index)
        obs_val.extend(sample_values)
        times.append(ts)
        seqs.append(int(seq))
    batch.host_ts.append(times)
    batch.host_seq.append(seqs)
    batch.host_last.append(previous)
    return shapes, first_sample, sample_shapes


def _row_parts(row, path, host_id):
    """(seq, ts, names, values) of a sample row [seq, ts, names, float64 bytes]; InvalidArgument naming the fault."""
    if len(row) != 4:
        raise bad(path, f"a sample row must be [seq, ts, metric names, float64 values], got {len(row)} items", host_id)
    seq, ts, names, values = row
    checked = checked_names(names)
    if checked is None or not isinstance(values, bytes) or len(values) != 8 * len(checked):
        if not isinstance(names, (list, tuple)) or not set(map(type, names)) <= {str} or "" in names:
            raise bad(path, "a sample row's metric names must be a list of non-empty strings", host_id)
        got = f"{len(values)} bytes" if isinstance(values, bytes) else type(values).__name__
        raise bad(path, f"a sample row's values must be bytes holding one little-endian float64 per distinct metric "
                        f"name; got {got} for {len(names)} names ({len(set(names))} distinct)", host_id)
    return seq, ts, checked, row_values(checked, values)


def _index_rows(batch, sample_rows, known_of_host):
    """Fill the batch's per-row, per-host and per-value index arrays from its hosts' layouts, a few NumPy calls in all.

    sample_rows holds, per sample, the rows of its values counted from its host's first row; known_of_host, per host,
    how many of its rows (the first ones) come with its state.
    """
    layouts = batch.host_layout
    widths = np.fromiter((len(layout.names) for layout in layouts), np.intp, count=len(layouts))
    batch.host_width, batch.host_base = widths, np.cumsum(widths) - widths
    batch.names = list(chain.from_iterable(layout.names for layout in layouts))
    batch.host_of_row = np.repeat(np.arange(len(layouts)), widths)
    batch.state_rows = np.nonzero(positions_within(widths) < np.repeat(known_of_host, widths))[0]
    batch.host_samples = samples_of_host = np.fromiter(map(len, batch.host_ts), np.intp, count=len(layouts))
    values_of_sample = np.fromiter(map(len, sample_rows), np.intp, count=len(sample_rows))
    batch.obs_row = (np.concatenate(sample_rows) if sample_rows else np.zeros(0, np.intp)) + np.repeat(
        np.repeat(batch.host_base, samples_of_host), values_of_sample)
    batch.obs_col = np.repeat(positions_within(samples_of_host), values_of_sample)


def _state_row_path(batch, position):
    """(path, host id) of the batch's state row at `position` among the rows that came with a state."""
    row = batch.state_rows[position]
    h = batch.host_of_row[row]
    return f"hosts[{h}].state.metrics[{batch.names[row]!r}]", batch.host_ids[h]


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
        number = finite_real(value)
        if number is None or abs(number) > MAX_ABS_VALUE:
            row = batch.obs_row[k]
            h = batch.host_of_row[row]
            path = f"hosts[{h}].samples[{batch.obs_col[k]}].metrics[{batch.names[row]!r}]"
            raise bad(path, f"expected a finite number, got {value!r}", batch.host_ids[h])
    return np.array([float(value) for value in values], dtype=np.float64)
