"""The measurement message: its metric schema (data the dashboard renders from) and its validation."""

import math
import re
import sys

from components.mesh.errors import InvalidArgument

MEASURE_TOPIC_PREFIX = "nerve.measure."
# The absence of measurements, as the orchestrator (which publishes and answers these) tells the alert keeper.
# Hosts that fell silent (no measurement for down_after) or were heard again: {ts, silent: [ids], heard: [ids]}. The
# keeper makes a silent host DOWN while its tracker's session is still open (a hung process, a machine or network
# that died without closing the connection: the router learns of those late or never).
SILENCE_TOPIC = "nerve.orchestrator.silence"
SILENT_URI = "nerve.orchestrator.silent"  # the hosts silent now, for a keeper that (re)starts meanwhile
HOST_ID_PATTERN = re.compile(r"^[a-z0-9_-]{1,64}$")
MAX_METRICS = 512
MAX_FUTURE_SECONDS = 60.0
MAX_AGE_SECONDS = 24 * 3600.0
# A seq past 2**53 has no exact double (JavaScript dashboards) and would poison gap counts; an interval outside
# these bounds makes a host never go stale, or stale between every two samples.
MAX_SEQ = 2**53
MIN_INTERVAL, MAX_INTERVAL = 0.1, 3600.0

# One entry per metric family. A metric name is the family, or family.instance for
# per-core / per-mount series ("cpu_core.3", "disk_used.root").
MEASURE_SCHEMA = {
    "cpu": {"label": "CPU", "unit": "%", "min": 0, "max": 100, "headline": True},
    "cpu_core": {"label": "CPU core", "unit": "%", "min": 0, "max": 100, "per": "core"},
    "load1": {"label": "Load 1 min", "unit": "", "min": 0},
    "load5": {"label": "Load 5 min", "unit": "", "min": 0},
    "load15": {"label": "Load 15 min", "unit": "", "min": 0},
    "mem": {"label": "Memory used", "unit": "%", "min": 0, "max": 100, "headline": True},
    "swap": {"label": "Swap used", "unit": "%", "min": 0, "max": 100},
    "disk_used": {"label": "Disk used", "unit": "%", "min": 0, "max": 100, "per": "mount"},
    "disk_read": {"label": "Disk read", "unit": "B/s", "min": 0},
    "disk_write": {"label": "Disk write", "unit": "B/s", "min": 0},
    "net_recv": {"label": "Network in", "unit": "B/s", "min": 0},
    "net_sent": {"label": "Network out", "unit": "B/s", "min": 0},
    "procs": {"label": "Processes", "unit": "", "min": 0},
}
HEADLINE_METRICS = tuple(name for name, spec in MEASURE_SCHEMA.items() if spec.get("headline"))
# Optional fields of a measurement beside host_id, hostname, run, seq, ts, interval and metrics.
MEASURE_OPTIONAL_FIELDS = {
    # Sent by a tracker measuring a real machine (not by the simulator); the alert keeper reads it from the first
    # measurement after each join: a boot time that moved is a REBOOT alert.
    "boot_time": {"label": "Booted at", "unit": "epoch s", "min": 0},
}


def measure_topic(host_id):
    """The topic a host's measurements are published on."""
    return MEASURE_TOPIC_PREFIX + host_id


def family_of(metric):
    """The schema family of a metric name ("disk_used.root" -> "disk_used")."""
    return metric.split(".", 1)[0]


def finite_number(value):
    """Whether value is an int or float (not a bool) and finite: what every epoch time and metric value must be."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_bounds_by_name = {}  # metric name -> (low, high) its values must lie in; the orchestrator checks ~15 per measurement
_MAX_CACHED_NAMES = 4096  # names are free text: a sender inventing new ones must not grow the cache without end


def _bounds_of(name):
    """The (low, high) a metric's value must lie in (finite, max with 0.1 % slack), or None if not in the schema."""
    if not isinstance(name, str):
        return None
    bounds = _bounds_by_name.get(name)
    if bounds is None:
        spec = MEASURE_SCHEMA.get(family_of(name))
        if spec is None:
            return None
        high = spec["max"] * 1.001 if "max" in spec else sys.float_info.max
        bounds = (spec.get("min", -sys.float_info.max), high)
        if len(_bounds_by_name) < _MAX_CACHED_NAMES:
            _bounds_by_name[name] = bounds
    return bounds


def validate_measure(event, now, topic=None):
    """Check a measurement event against the schema; return it, or raise InvalidArgument naming the field."""
    # The orchestrator checks every host's measurement every second: a well-formed one, with metric names
    # seen before, passes with plain comparisons; anything else takes the full check, which names the problem.
    if type(event) is dict:
        host_id, seq, ts, interval, metrics = (event.get("host_id"), event.get("seq"), event.get("ts"), event.get("interval"),
                                               event.get("metrics"))
        if (type(host_id) is str and type(seq) is int and type(ts) is float and type(interval) is float
                and type(metrics) is dict and 0 <= seq <= MAX_SEQ and MIN_INTERVAL <= interval <= MAX_INTERVAL
                and now - MAX_AGE_SECONDS <= ts <= now + MAX_FUTURE_SECONDS and 0 < len(metrics) <= MAX_METRICS
                and (topic is None or topic == MEASURE_TOPIC_PREFIX + host_id) and HOST_ID_PATTERN.match(host_id)
                and ("boot_time" not in event or type(event["boot_time"]) is float and event["boot_time"] >= 0)):
            cached = _bounds_by_name.get
            for name, value in metrics.items():
                bounds = cached(name)
                if bounds is None or not ((type(value) is float or type(value) is int) and bounds[0] <= value <= bounds[1]):
                    break
            else:
                return event
    return _validate_fully(event, now, topic)


def _validate_fully(event, now, topic):
    """Every check, in order, raising InvalidArgument that names the first field that fails."""
    if not isinstance(event, dict):
        raise InvalidArgument(f"measurement must be an object, got {type(event).__name__}")
    for field, kind in (("host_id", str), ("seq", int), ("ts", float), ("interval", float), ("metrics", dict)):
        if field not in event:
            raise InvalidArgument(f"measurement lacks field '{field}'")
        value = event[field]
        ok = isinstance(value, dict) if kind is dict else isinstance(value, str) if kind is str else (
            isinstance(value, int) and not isinstance(value, bool) if kind is int else finite_number(value))
        if not ok:
            raise InvalidArgument(f"measurement field '{field}': expected {kind.__name__}, got {value!r:.60}")
    host_id = event["host_id"]
    if not HOST_ID_PATTERN.match(host_id):
        raise InvalidArgument(f"measurement field 'host_id': {host_id!r:.70} is not URI-safe (1-64 of a-z 0-9 _ -)")
    if topic is not None and topic != measure_topic(host_id):
        raise InvalidArgument(f"measurement for host '{host_id}' arrived on topic {topic!r}")
    if not 0 <= event["seq"] <= MAX_SEQ:
        raise InvalidArgument(f"measurement field 'seq' must be from 0 to 2**53, got {event['seq']}")
    if not MIN_INTERVAL <= event["interval"] <= MAX_INTERVAL:
        raise InvalidArgument(f"measurement field 'interval' must be from {MIN_INTERVAL} to {MAX_INTERVAL:.0f} seconds, "
                              f"got {event['interval']}")
    ts = event["ts"]
    if ts > now + MAX_FUTURE_SECONDS or ts < now - MAX_AGE_SECONDS:
        raise InvalidArgument(f"measurement field 'ts': {ts} is {ts - now:+.0f} s from now, outside the accepted range")
    boot_time = event.get("boot_time", 0.0)
    if not finite_number(boot_time) or boot_time < 0:
        raise InvalidArgument(f"measurement field 'boot_time' must be epoch seconds (a number >= 0), got {boot_time!r:.60}")
    metrics = event["metrics"]
    if not metrics or len(metrics) > MAX_METRICS:
        raise InvalidArgument(f"measurement field 'metrics' must hold 1 to {MAX_METRICS} values, got {len(metrics)}")
    for name, value in metrics.items():
        bounds = _bounds_of(name)
        if bounds is None:
            raise InvalidArgument(f"measurement metric {name!r:.60} is not in the schema")
        low, high = bounds
        if not finite_number(value):
            raise InvalidArgument(f"measurement metric '{name}': expected a finite number, got {value!r:.60}")
        if not low <= value <= high:
            spec = MEASURE_SCHEMA[family_of(name)]
            raise InvalidArgument(f"measurement metric '{name}': {value} is outside [{spec.get('min')}, {spec.get('max')}]")
    return event
