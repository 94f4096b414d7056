"""Checks shared by the parts of the analysis: finite numbers, timestamps, metric name lists, error messages."""

import math
import numbers

from components.mesh.errors import InvalidArgument

MAX_ABS_VALUE = 1e100  # keeps squares and co-moments far from float overflow
MAX_ABS_TS = 1e15  # seconds; anything larger is a unit mistake (ms or ns epoch)
CACHE_LIMIT = 4096  # entries a lookup cache of this package keeps before it starts over

# Metric name lists already found to be distinct non-empty strings, each kept as one tuple. A fleet's hosts
# share a handful of lists, and looking one up costs a fraction of checking it again for every host.
_CHECKED_NAMES = {}


def finite_real(value):
    """The value as a float if it is a finite real number (bool excluded), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        number = float(value)
    except (OverflowError, ValueError, TypeError):
        return None
    return number if math.isfinite(number) else None


def bad(path, problem, host_id=None):
    """An InvalidArgument "path: problem (host 'id')" for a faulty part of a call."""
    return InvalidArgument(f"{path}: {problem}" + (f" (host {host_id!r})" if host_id is not None else ""))


def check_ts(value, path, host_id):
    """The timestamp as a float; InvalidArgument naming `path` unless it is a finite number within MAX_ABS_TS."""
    if type(value) is float and -MAX_ABS_TS <= value <= MAX_ABS_TS:
        return value
    number = finite_real(value)
    if number is None or abs(number) > MAX_ABS_TS:
        raise bad(path, f"expected a finite number of seconds, got {value!r}", host_id)
    return number


def checked_names(names):
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
        if len(_CHECKED_NAMES) >= CACHE_LIMIT:
            _CHECKED_NAMES.clear()
        checked = _CHECKED_NAMES[key] = key
    return checked
