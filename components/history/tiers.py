"""The history's tiers (1 s, 1 min, 1 h), how long and how much of each is kept, and the flags that set them."""

import re
from dataclasses import dataclass

from components.mesh.errors import ConfigError

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d|w|y)$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?$", re.IGNORECASE)
_BYTES = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40}


@dataclass(frozen=True)
class Tier:
    """One resolution of the history: `step` seconds per point, kept `keep` seconds, `share` of the disk budget.

    `block` is how many seconds one stored block covers; coarse tiers (step > 1) keep min, mean and max per step.
    """

    name: str
    step: int
    keep: float
    block: int
    share: float

    @property
    def coarse(self):
        """Whether a point is a rollup (min/mean/max of a step) rather than a sample."""
        return self.step > 1


# Blocks: 1 s data in 2-minute blocks (what the recorder holds in memory per host), 1 min data in 30-minute
# blocks, 1 h data in 1-day blocks; the disk budget goes mostly to the finest tier, which holds most points.
DEFAULT_TIERS = (
    Tier("1s", 1, 2 * 86400, 120, 0.7),
    Tier("1m", 60, 30 * 86400, 1800, 0.2),
    Tier("1h", 3600, 365 * 86400, 86400, 0.1),
)
TIER_NAMES = tuple(tier.name for tier in DEFAULT_TIERS)


def parse_duration(text):
    """Seconds of a duration such as 90s, 15m, 2d, 1w, 1y."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ConfigError(f"a duration is a number and one of s, m, h, d, w, y (e.g. 2d), got {text!r}")
    return float(match.group(1)) * _SECONDS[match.group(2)]


def parse_size(text):
    """Bytes of a size such as 2GB, 500MB, 1GiB (decimal units unless the i form)."""
    match = _SIZE.match(str(text).strip())
    if not match:
        raise ConfigError(f"a size is a number and a unit such as MB or GB (e.g. 2GB), got {text!r}")
    return int(float(match.group(1)) * _BYTES[(match.group(2) or "B").lower()])


def parse_retention(text, tiers=DEFAULT_TIERS):
    """The tiers with the ages of `1s=2d,1m=30d,1h=365d` (any subset; the others keep their defaults)."""
    keep = {tier.name: tier.keep for tier in tiers}
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        name, _, duration = part.partition("=")
        if name not in keep:
            raise ConfigError(f"retention names a tier of {', '.join(keep)}, got {name!r} in {text!r}")
        keep[name] = parse_duration(duration)
        if keep[name] <= 0:
            raise ConfigError(f"retention of tier {name} must be > 0, got {duration!r}")
    return tuple(Tier(tier.name, tier.step, keep[tier.name], tier.block, tier.share) for tier in tiers)
