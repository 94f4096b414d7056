"""Where one host's values go in the batch's rows, worked out once per distinct set of metric names and looked up."""

import numpy as np

from components.monitor.analysis.checks import CACHE_LIMIT, bad

# (state names, each distinct sample shape in order of first appearance) -> Layout. Keyed by distinct shapes, not
# by samples, so a backlog of many samples per host adds no entries.
_LAYOUTS = {}


class Layout:
    """Where one host's values go, given its state's metric names and the distinct name lists of its samples.

    It is the same for every host of a fleet whose machines report the same metrics, so it is worked out once.
    """

    __slots__ = ("names", "shape_rows", "order", "sorted_names", "in_order")

    def __init__(self, names, shape_rows):
        self.names = tuple(names)  # row order: the state's names, then new ones as first seen
        self.shape_rows = shape_rows  # per distinct sample shape (names in order), the row of each of its values
        self.order = sorted(range(len(names)), key=names.__getitem__)  # rows in name order, as results list them
        self.sorted_names = [names[row] for row in self.order]
        self.in_order = self.order == list(range(len(names)))


def layout_of(key, first_sample, path, host_id):
    """The layout for a host whose state names and sample shapes are `key`, remembered for the next host.

    Shape i was first seen in sample first_sample[i]. A new metric name must be a non-empty string (the names of rows
    and states are checked before).
    """
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
                        raise bad(f"{path}.samples[{j}].metrics[{name!r}]", "metric names must be non-empty strings",
                                  host_id)
                    ids[k] = row_of[name] = len(names)
                    names.append(name)
        shape_rows.append(np.array(ids, dtype=np.intp))
    if len(_LAYOUTS) >= CACHE_LIMIT:
        _LAYOUTS.clear()
    layout = _LAYOUTS[key] = Layout(names, shape_rows)
    return layout
