"""What a call may tune: level thresholds per metric family and the time constants of the statistics."""

import numbers
import re
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from components.mesh.errors import InvalidArgument
from components.monitor.analysis.checks import finite_real

_FAMILY_RE = re.compile(r"^[A-Za-z0-9_-]+$")


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
            number = finite_real(raw)
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
            number = finite_real(raw)
            if number is None or number <= 0:
                raise InvalidArgument(f"analysis params {name}: expected a finite number > 0, got {raw!r}")
            object.__setattr__(self, name, number)
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, numbers.Integral) or self.warmup < 0:
            raise InvalidArgument(f"analysis params warmup: expected an integer >= 0, got {self.warmup!r}")
        object.__setattr__(self, "warmup", int(self.warmup))


def parse_thresholds(text):
    """Thresholds per family from 'cpu=25:75,mem=70:90:5:2' (low:high[:hysteresis[:min_duration]]).

    Raises InvalidArgument naming the bad part.
    """
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
        parsed[family] = _parse_spec(item, spec)
    return parsed


def _parse_spec(item, spec):
    """The Thresholds of one part's 'LOW:HIGH[:HYSTERESIS[:MIN_DURATION]]'; errors name the whole part `item`."""
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
        return Thresholds(*numbers_)
    except InvalidArgument as exc:
        raise InvalidArgument(f"thresholds part {item!r}: {exc}") from None


def thresholds_table(names, thresholds):
    """Per row (metric name), its family's (low, high, hysteresis, min_duration), and whether it has thresholds."""
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
