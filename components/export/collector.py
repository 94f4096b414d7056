"""FleetCollector: every live host's latest values, levels and anomaly scores, and the orchestrator's counters, as
Prometheus metric families.

Each nerve.samples event replaces the views of the hosts it carries (in the reactor's thread); each scrape builds
the families from a copy of the views (in the web server's thread): O(hosts) per scrape and no router message.
A view is never changed once stored, so a scrape reads every host whole.
"""

import math
import threading
import time
from dataclasses import dataclass
from typing import NamedTuple, Optional

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from components.mesh.errors import InvalidArgument
from components.monitor.analysis.state import LEVELS
from components.monitor.measure import HOST_ID_PATTERN, MAX_INTERVAL, MEASURE_SCHEMA, MIN_INTERVAL

PREFIX = "nerve_"
# A schema unit -> (name suffix, factor to the base unit, what the value is). Prometheus names carry base units
# and ratios run 0-1, so a percentage becomes _ratio divided by 100.
UNIT_CONVERSIONS = {
    "%": ("_ratio", 0.01, "ratio 0-1"),
    "B/s": ("_bytes_per_second", 1.0, "bytes per second"),
    "": ("", 1.0, ""),
}
LEVEL_VALUES = {name: index for index, name in enumerate(LEVELS)}
LEVEL_MEANING = ", ".join(f"{index} {name}" for name, index in LEVEL_VALUES.items())

# nerve.stats fields exposed as nerve_orchestrator_<field>: counters since the orchestrator started, and gauges.
STATS_COUNTERS = {
    "received": "Measurements received",
    "analysed": "Samples analysed",
    "calls": "nerve.analyze calls made",
    "retries": "nerve.analyze calls that failed and were retried",
    "backpressure": "nerve.analyze calls refused at the analyzers' concurrency cap",
    "duplicates": "Duplicate measurements dropped",
    "gaps": "Measurements missing from a tracker's sequence",
    "alerts": "Level changes alerted",
    "coalesced": "Pending samples dropped to keep each host's backlog bounded (newest kept)",
    "out_of_order": "Measurements older than the host's newest pending one (kept in the window, not analysed)",
    "analysis_unwatched": "Analysis events not published because nobody subscribed",
    "packed_refused": "Packed nerve.analyze calls an older analyzer refused",
    "deadlines_missed": "nerve.analyze calls that ran out of their deadline and were sent again",
    "samples_events": "nerve.samples events published",
}
STATS_GAUGES = {
    "hosts": "Hosts the orchestrator knows",
    "backlog": "Samples waiting for analysis",
    "in_flight": "nerve.analyze calls in flight",
    "capacity": "Calls the analyzers take at once, as learnt from refusals",
    "lag_seconds": "Age of the oldest sample waiting for analysis",
    "watched_hosts": "Hosts whose analysis events someone subscribes to",
    "active": "1 when the orchestrator that answered is the active one",
}
# nerve.stats latency summaries (over its last 10,000) -> the `measure` label of nerve_orchestrator_latency_seconds.
STATS_LATENCIES = {"arrival_latency": "arrival", "analysis_latency": "analysis", "call_time": "call"}


@dataclass(frozen=True)
class SeriesSpec:
    """How one metric family of the measurement schema is exposed."""

    name: str
    help: str
    factor: float  # schema unit -> base unit
    instance_label: Optional[str]  # "core" for cpu_core.3, "mount" for disk_used.root; None for plain families


def series_specs(schema=MEASURE_SCHEMA):
    """{family: SeriesSpec} for each family of the schema; ValueError naming a family whose unit has no conversion."""
    specs = {}
    for family, spec in schema.items():
        if spec["unit"] not in UNIT_CONVERSIONS:
            raise ValueError(f"metric family {family!r}: unit {spec['unit']!r} has no Prometheus conversion "
                             f"(add it to UNIT_CONVERSIONS in {__name__})")
        suffix, factor, meaning = UNIT_CONVERSIONS[spec["unit"]]
        per = spec.get("per")
        text = spec["label"] + (f" ({meaning})" if meaning else "") + f", latest measurement per host{' and ' + per if per else ''}"
        specs[family] = SeriesSpec(PREFIX + family + suffix, text, factor, per)
    return specs


SERIES = series_specs()


class HostView(NamedTuple):
    """What the exporter shows of one host: replaced whole by each nerve.samples event that carries it."""

    hostname: str
    ts: float  # the newest measurement's time (epoch s)
    values: dict  # metric name -> latest value, in the schema's unit
    level: Optional[str]
    levels: dict  # metric family -> level
    anomaly: dict  # metric name -> robust z-score
    interval: float  # seconds between the host's measurements, as seen
    stale_at: float  # the clock time after which the host drops out unless more arrives


_NUMBER_TYPES = frozenset((int, float))  # exactly: a bool is not a value, and events decode to plain int and float


def _number(value):
    return type(value) in _NUMBER_TYPES and math.isfinite(value)


def _checked_levels(host_id, levels):
    # Names become label values and levels index a table: what is not a string is refused here, not at a scrape.
    if not isinstance(levels, dict) or not all(type(name) is str and type(level) is str and level in LEVEL_VALUES
                                               for name, level in levels.items()):
        raise InvalidArgument(f"nerve.samples host {host_id!r}: 'levels' must map metric families to one of "
                              f"{', '.join(LEVELS)}, got {levels!r:.80}")
    return levels


def host_view(host_id, entry, previous, now, stale_after):
    """The HostView of one host's entry in a nerve.samples event; InvalidArgument naming what is malformed."""
    if not isinstance(host_id, str) or not HOST_ID_PATTERN.match(host_id):
        raise InvalidArgument(f"nerve.samples host id {host_id!r:.70} is not URI-safe (1-64 of a-z 0-9 _ -)")
    if not isinstance(entry, dict):
        raise InvalidArgument(f"nerve.samples host {host_id!r}: the entry must be an object, got {type(entry).__name__}")
    stamps, metrics = entry.get("ts"), entry.get("metrics")
    if not isinstance(stamps, list) or not stamps or not all(_number(ts) for ts in stamps):
        raise InvalidArgument(f"nerve.samples host {host_id!r}: 'ts' must be a non-empty list of epoch seconds")
    if not isinstance(metrics, dict):
        raise InvalidArgument(f"nerve.samples host {host_id!r}: 'metrics' must map metric names to lists of values")
    values = {}
    for name, column in metrics.items():
        if type(name) is not str:
            raise InvalidArgument(f"nerve.samples host {host_id!r}: 'metrics' must map metric names (strings) to lists "
                                  f"of values, got the name {name!r:.60}")
        if not isinstance(column, list) or len(column) != len(stamps):
            raise InvalidArgument(f"nerve.samples host {host_id!r}: metric {name!r:.60} must be a list of {len(stamps)} "
                                  f"values aligned with 'ts'")
        value = column[-1]
        if value is None:  # the newest measurement lacks it: the newest one that has it
            value = next((value for value in reversed(column) if value is not None), None)
        if value is not None:
            if not _number(value):
                raise InvalidArgument(f"nerve.samples host {host_id!r}: metric {name!r:.60} has a value that is not a "
                                      f"finite number: {value!r:.40}")
            values[name] = value
    level, anomaly = entry.get("level"), entry.get("anomaly") or {}
    if level is not None and (type(level) is not str or level not in LEVEL_VALUES):
        raise InvalidArgument(f"nerve.samples host {host_id!r}: 'level' must be one of {', '.join(LEVELS)} or null, "
                              f"got {level!r:.40}")
    if not isinstance(anomaly, dict) or not all(type(name) is str and _number(score) for name, score in anomaly.items()):
        raise InvalidArgument(f"nerve.samples host {host_id!r}: 'anomaly' must map metric names to numbers")
    ts = max(stamps)
    if len(stamps) > 1:
        interval = (ts - min(stamps)) / (len(stamps) - 1)
    elif previous is not None and ts > previous.ts:
        interval = ts - previous.ts
    else:
        interval = previous.interval if previous is not None else 1.0
    interval = min(max(interval, MIN_INTERVAL), MAX_INTERVAL)
    return HostView(str(entry.get("hostname", host_id))[:255], ts, values, level,
                    _checked_levels(host_id, entry.get("levels") or {}), anomaly, interval,
                    now + max(stale_after, 3 * interval))


class FleetCollector(Collector):
    """A prometheus_client collector of the fleet as the nerve.samples events and nerve.stats answers show it.

    A host drops out when nothing arrived for max(stale_after, 3 of its intervals) (the orchestrator's own rule for a
    stale host); the orchestrator's families drop out when no nerve.stats answer came for stats_max_age seconds."""

    def __init__(self, stale_after=5.0, stats_max_age=15.0, clock=time.time):
        self.stale_after = stale_after
        self.stats_max_age = stats_max_age
        self.clock = clock
        self.lock = threading.Lock()
        self.hosts = {}  # host_id -> HostView
        self.stats = (None, None)  # (clock time answered, the nerve.stats answer)
        self.events = 0
        self._placements = {}  # metric name -> (SeriesSpec, instance) or None; names repeat across hosts

    # -- what arrives (reactor thread) ---------------------------------------------------
    def ingest(self, event):
        """Take one nerve.samples event; InvalidArgument (and nothing changed) if any part is malformed."""
        hosts = event.get("hosts") if isinstance(event, dict) else None
        if not isinstance(hosts, dict):
            raise InvalidArgument("a nerve.samples event must be an object with 'hosts' mapping host ids to entries")
        now = self.clock()
        current = self.hosts
        views = {host_id: host_view(host_id, entry, current.get(host_id), now, self.stale_after)
                 for host_id, entry in hosts.items()}
        with self.lock:
            self.hosts.update(views)
            self.events += 1

    def drop_stale(self):
        """Forget the hosts that went stale; returns how many."""
        now = self.clock()
        with self.lock:
            stale = [host_id for host_id, view in self.hosts.items() if view.stale_at <= now]
            for host_id in stale:
                del self.hosts[host_id]
        return len(stale)

    def set_stats(self, stats):
        """Keep the orchestrator's latest nerve.stats answer."""
        if not isinstance(stats, dict):
            raise InvalidArgument(f"nerve.stats answered {type(stats).__name__}, not an object")
        self.stats = (self.clock(), stats)

    # -- a scrape (web server thread) ----------------------------------------------------
    def live_hosts(self):
        """[(host_id, HostView)] of the hosts that are not stale, in arrival order."""
        now = self.clock()
        with self.lock:
            views = list(self.hosts.items())
        return [(host_id, view) for host_id, view in views if view.stale_at > now]

    def collect(self):
        """The metric families of one scrape."""
        hosts = self.live_hosts()
        yield from self.measurement_families(hosts)
        yield from self.analysis_families(hosts)
        yield from self.orchestrator_families()
        yield GaugeMetricFamily(PREFIX + "exporter_hosts", "Hosts in this exposition (not stale)", value=len(hosts))
        yield CounterMetricFamily(PREFIX + "exporter_samples_events", "nerve.samples events taken", value=self.events)

    def _placement(self, name):
        placement = self._placements.get(name, False)
        if placement is False:
            family, _, instance = name.partition(".")
            spec = SERIES.get(family)
            placement = (spec, instance) if spec is not None else None
            if len(self._placements) < 4096:  # names are free text: an odd sender must not grow this without end
                self._placements[name] = placement
        return placement

    def measurement_families(self, hosts):
        """One gauge family per schema family, its values in base units, labelled by host (and core or mount)."""
        families = {spec.name: GaugeMetricFamily(spec.name, spec.help, labels=("host", spec.instance_label)
                                                 if spec.instance_label else ("host",)) for spec in SERIES.values()}
        for host_id, view in hosts:
            for name, value in view.values.items():
                placement = self._placement(name)
                if placement is None:
                    continue
                spec, instance = placement
                families[spec.name].add_metric((host_id, instance) if spec.instance_label else (host_id,),
                                               value * spec.factor)
        return families.values()

    @staticmethod
    def analysis_families(hosts):
        """Levels, anomaly scores, hostnames and measurement times per host."""
        host_level = GaugeMetricFamily(PREFIX + "host_level", f"The host's highest level now ({LEVEL_MEANING})",
                                       labels=("host",))
        level = GaugeMetricFamily(PREFIX + "level", f"Latest analysed level per metric family ({LEVEL_MEANING})",
                                  labels=("host", "metric"))
        anomaly = GaugeMetricFamily(PREFIX + "anomaly_score", "Latest anomaly score per metric (robust z-score)",
                                    labels=("host", "metric"))
        info = GaugeMetricFamily(PREFIX + "host_info", "1 per host, labelled with its real hostname",
                                 labels=("host", "hostname"))
        seen = GaugeMetricFamily(PREFIX + "last_measurement_timestamp_seconds", "When the host's newest measurement "
                                 "was taken (epoch seconds)", labels=("host",))
        for host_id, view in hosts:
            if view.level is not None:
                host_level.add_metric((host_id,), LEVEL_VALUES[view.level])
            for family, name in view.levels.items():
                level.add_metric((host_id, family), LEVEL_VALUES[name])
            for metric, score in view.anomaly.items():
                anomaly.add_metric((host_id, metric), score)
            info.add_metric((host_id, view.hostname), 1)
            seen.add_metric((host_id,), view.ts)
        return host_level, level, anomaly, info, seen

    def orchestrator_families(self):
        """The orchestrator's counters and gauges from its latest nerve.stats answer, while that is fresh."""
        answered, stats = self.stats
        fresh = answered is not None and self.clock() - answered <= self.stats_max_age
        yield GaugeMetricFamily(PREFIX + "orchestrator_up", "1 while the exporter has a fresh nerve.stats answer",
                                value=int(fresh))
        if not fresh:
            return
        name = PREFIX + "orchestrator_"
        for field, text in STATS_COUNTERS.items():
            # The orchestrator counts with a Counter, so a field appears with its first event: 0 until then, so that
            # rate() sees that first one.
            count = stats.get(field, 0)
            if _number(count):
                yield CounterMetricFamily(name + field, text, value=count)
        for field, text in STATS_GAUGES.items():
            if _number(stats.get(field)) or isinstance(stats.get(field), bool):
                yield GaugeMetricFamily(name + field, text, value=float(stats[field]))
        yield from _labelled_counters(name + "dropped_events", "Malformed events dropped, per topic", "source",
                                      stats.get("dropped"))
        yield from _labelled_counters(name + "handler_errors", "Event handler failures, per handler", "handler",
                                      stats.get("handler_errors"))
        collections = stats.get("gc")
        if isinstance(collections, dict) and _number(collections.get("count")) and _number(collections.get("seconds")):
            yield CounterMetricFamily(name + "gc_collections", "Garbage collections", value=collections["count"])
            yield CounterMetricFamily(name + "gc_seconds", "Seconds spent in garbage collections",
                                      value=collections["seconds"])
        latency = GaugeMetricFamily(name + "latency_seconds", "p50 and p99 over the orchestrator's last 10,000: "
                                    "measurement to arrival, to analysis, and the nerve.analyze round trip",
                                    labels=("measure", "quantile"))
        for field, measure in STATS_LATENCIES.items():
            summary = stats.get(field)
            if isinstance(summary, dict):
                for quantile, key in (("0.5", "p50_ms"), ("0.99", "p99_ms")):
                    if _number(summary.get(key)):
                        latency.add_metric((measure, quantile), summary[key] / 1000)
        yield latency
        histogram = _latency_histogram(name + "analysis_latency_seconds", stats.get("analysis_latency_histogram"))
        if histogram is not None:
            yield histogram


def _labelled_counters(name, text, label, counts):
    """A counter family with one series per key of a {key: count} field, or nothing when the field is absent."""
    if isinstance(counts, dict):
        family = CounterMetricFamily(name, text, labels=(label,))
        for key, count in counts.items():
            if _number(count):
                family.add_metric((str(key),), count)
        yield family


def _latency_histogram(name, histogram):
    """nerve.stats' {edges_ms, counts} (per bucket, one more count than edges) as a cumulative Prometheus histogram."""
    if not isinstance(histogram, dict):
        return None
    edges, counts = histogram.get("edges_ms"), histogram.get("counts")
    if not isinstance(edges, list) or not isinstance(counts, list) or len(counts) != len(edges) + 1:
        return None
    buckets, total = [], 0
    for edge, count in zip([*(f"{edge / 1000:g}" for edge in edges), "+Inf"], counts):
        total += count if _number(count) else 0
        buckets.append((edge, total))
    family = HistogramMetricFamily(name, "Measurement time to analysis, every sample since the orchestrator started")
    family.add_metric((), buckets, sum_value=None)
    return family
