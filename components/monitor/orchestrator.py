"""The orchestrator: the one subscriber of measurements; batches hosts into nerve.analyze calls and publishes results.

Per host it keeps a bounded window (for nerve.history), the samples not yet analysed,
and the compact analysis state the analyzers return. Work for a host is coalesced:
while a call for it is in flight or the analyzers are saturated, new samples queue
on the host (bounded), never in an unbounded global queue.
"""

import math
import time
from bisect import bisect_left
from collections import Counter, deque
from itertools import islice
from dataclasses import dataclass

from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer, reactor, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from components.monitor.analysis import describe_compact, pack_batch, unpack_batch
from components.mesh.config import MeshConfig
from components.mesh.decorators import every, on, on_join, procedure
from components.mesh.errors import ConfigError, InvalidArgument, NotFound, Unavailable
from components.mesh.collector import collection_stats
from components.monitor.interest import TopicInterest
from components.monitor.measure import (
    HEADLINE_METRICS,
    HOST_ID_PATTERN,
    MEASURE_SCHEMA,
    MEASURE_TOPIC_PREFIX,
    SILENCE_TOPIC,
    SILENT_URI,
    family_of,
    finite_number,
    validate_measure,
)
from components.monitor.samples import (
    SAMPLES_SINCE_MAX_ROWS,
    SAMPLES_TOPIC,
    merged_samples,
    samples_events,
    samples_page,
)
from components.monitor.window import SampleWindow, as_sample

log = Logger(namespace="nerve.orchestrator")

ANALYZE_URI = "nerve.analyze"
LEADER_URI = "nerve.orchestrator.leader"
ANALYSED_URI = "nerve.orchestrator.analysed"
ALERTS_OPEN_URI = "nerve.alerts.open"  # the alert keeper's open alerts (components/alerts)
ANALYSIS_TOPIC_PREFIX = "nerve.analysis."
ANALYSIS_EVENTS = ("subscribed", "all")
# How nerve.analyze calls travel: the batch as one binary value with compact results (packed), the same as
# MessagePack lists the router decodes (compact), or readable results too (full, for debugging).
ANALYSIS_WIRES = ("packed", "compact", "full")
# An analyzer that refuses a packed call (one from before packed calls or sample rows) gets compact calls for
# this long; then packed is tried again, so a mesh upgraded analyzer by analyzer moves back by itself.
PACKED_REFUSED_SECONDS = 60.0
LATENCY_SAMPLES = 10000
# Upper edges of the measurement-to-analysis histogram nerve.stats counts since start: a reader that takes it
# twice has the distribution over every host between the two readings, where the percentiles above cover only
# the last LATENCY_SAMPLES results (about 2 s at 4,000 hosts).
LATENCY_EDGES_MS = (25, 50, 100, 150, 200, 300, 400, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000)
_LATENCY_EDGES_S = tuple(edge / 1000 for edge in LATENCY_EDGES_MS)
BACKPRESSURE_ERRORS = ("crossbar.error.max_concurrency_reached",)
NO_ANALYZER_ERRORS = ("wamp.error.no_such_procedure", "wamp.error.no_such_registration")
ANALYSIS_SCHEMA = {
    "value": {"label": "Value", "unit": "metric"},
    "level": {"label": "Level", "unit": "LOW / MEDIUM / HIGH"},
    "mean": {"label": "Mean", "unit": "metric"},
    "p95": {"label": "p95", "unit": "metric"},
    "trend": {"label": "Trend", "unit": "metric per minute"},
    "anomaly": {"label": "Anomaly", "unit": "robust z-score"},
}
# How long a nerve.analyze call may take before its hosts go to another analyzer: four times the slowest of the
# last RECENT_CALLS round trips, at least MIN_CALL_DEADLINE s, at most call_timeout; doubled per call that ran out
# in a row (so analyzers that are all slow still finish). A stopped analyzer (SIGSTOP, swapped out) then holds its
# call's hosts about a second, not call_timeout; the router keeps its concurrency slot taken until it answers, so
# no further call goes to it meanwhile.
MIN_CALL_DEADLINE = 1.0
CALL_DEADLINE_FACTOR = 4
RECENT_CALLS = 32
SAMPLES_HANDOVER_ROUNDS = 5  # rounds of nerve.samples a standby keeps for a takeover (a few times the leader check)
MAX_ALERTS_PER_HOST = 50
# A digest entry's fields: the host's level, its newest measurement's ts and seq, whether it is stale, headline values.
DIGEST_FIELDS = ("level", "ts", "seq", "stale", *HEADLINE_METRICS)
MAX_RECENT_SAMPLES = 600  # nerve.snapshot's recent values per host: 10 min at 1 Hz
# A nerve.analyze call must stay under the router's max_message_size (8 MiB in .crossbar/config.json, tested):
# a backlog of samples per host after an analyzer outage would otherwise make the call unsendable.
MAX_CALL_BYTES = 6 * 2**20
STATE_BYTES_PER_METRIC = 160  # a compact state row (15 float64) and its name, with msgpack framing; generous
SAMPLE_BYTES_PER_METRIC = 24  # one metric of one pending sample (name and float)


def digest_entries(event):
    """{host_id: {field: value}} of a nerve.digest or nerve.snapshot event: its rows under `fields`, or its entries."""
    fields = event.get("fields")
    hosts = event.get("hosts") or {}
    return {host_id: dict(zip(fields, row)) for host_id, row in hosts.items()} if fields else hosts


@dataclass(frozen=True)
class OrchestratorConfig:
    """Orchestrator settings: window length, batching, digest tick and timeouts."""

    mesh: MeshConfig
    tick: float = 0.25
    window: float = 300.0
    batch_size: int = 100
    max_batch_size: int = 2500
    batch_delay: float = 0.02
    max_in_flight: int = 16
    max_pending: int = 600
    call_timeout: float = 30.0
    stale_after: float = 5.0
    down_after: float = 30.0  # seconds without a measurement (at least 10 intervals) before a host is reported silent
    analysis_events: str = "subscribed"
    analysis_wire: str = "packed"
    samples_every: float = 1.0  # seconds between nerve.samples events; 0: none

    def __post_init__(self):
        if not 0 <= self.samples_every <= 3600:
            raise ConfigError(f"samples every must be 0 (off) to 3600 seconds, got {self.samples_every}")
        if self.analysis_events not in ANALYSIS_EVENTS:
            raise ConfigError(f"analysis events must be one of {', '.join(ANALYSIS_EVENTS)}, got {self.analysis_events!r}")
        if self.analysis_wire not in ANALYSIS_WIRES:
            raise ConfigError(f"analysis wire must be one of {', '.join(ANALYSIS_WIRES)}, got {self.analysis_wire!r}")
        for name in ("tick", "window", "call_timeout", "stale_after"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.stale_after <= self.down_after <= 86400:
            raise ConfigError(f"down after must be {self.stale_after} (the stale time) to 86400 seconds, "
                              f"got {self.down_after}")
        if not 0 <= self.batch_delay <= self.tick:
            raise ConfigError(f"batch delay must be between 0 and the tick ({self.tick} s), got {self.batch_delay}")
        for name in ("batch_size", "max_in_flight", "max_pending"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', ' ')} must be >= 1, got {getattr(self, name)}")
        if self.max_batch_size < self.batch_size:
            raise ConfigError(f"max batch size must be >= the batch size ({self.batch_size}), got {self.max_batch_size}")


class HostRecord:
    """What the orchestrator knows of one host."""

    __slots__ = ("host_id", "hostname", "run", "last_seq", "last_ts", "interval", "window", "latest_metrics", "pending",
                 "in_flight", "state", "result", "analysis", "level_name", "analysed_seq", "analysed_ts",
                 "analyzed_at", "analyzer", "alerts", "stale_at", "digest_dirty", "digest_stale", "presence",
                 "silent_at", "silent")

    def __init__(self, host_id, max_window):
        self.host_id = host_id
        self.hostname = host_id
        self.run = None
        self.last_seq = -1
        self.last_ts = 0.0
        self.interval = 1.0
        self.window = SampleWindow(max_window)
        self.latest_metrics = {}  # of the sample received last
        self.pending = []
        self.in_flight = False
        self.state = None
        self.result = None  # the analyzer's latest answer for this host (compact or full)
        self.analysis = None  # the analysis event built from it, made only when someone asks
        self.level_name = None
        self.analysed_seq = None
        self.analysed_ts = None
        self.analyzed_at = None
        self.analyzer = None
        self.alerts = deque(maxlen=MAX_ALERTS_PER_HOST)
        self.stale_at = 0.0  # when the host turns stale if nothing more arrives (clock seconds)
        self.digest_dirty = True  # seq, level or headline values changed since the last digest
        self.digest_stale = None  # what the last digest said of its staleness
        self.presence = None  # DOWN or OFFLINE while the alert keeper says its tracker is gone (then the digest's level)
        self.silent_at = math.inf  # when the host is reported silent if nothing more arrives (clock seconds)
        self.silent = False  # reported silent, not heard since


class Orchestrator:
    """Subscribes measurements, calls analyzers in batches, publishes analysis, alerts and the digest.

    Several may run: all register LEADER_URI with invoke='first', and the one the router
    routes that call to is active. Standbys keep the same windows, follow the active one's
    analysis events to know what is done, and take over when it leaves; procedures are
    shared the same way, so callers always reach the active one.
    """

    def __init__(self, config, mesh, clock=time.time, scheduler=reactor):
        self.config = config
        self.mesh = mesh
        self.clock = clock
        self.scheduler = scheduler
        self.hosts = {}
        # Hosts with samples waiting and no call in flight, in the order they became due; kept in step
        # with pending/in_flight so dispatch and its checks cost O(due hosts), not O(hosts), per result.
        self.due = {}
        self.stats = Counter()
        self.in_flight_calls = 0
        self.dispatch_call = None
        self.saturated_until = 0.0
        self.backoff = 0.0
        # Calls the analyzers take at once, learnt from refusals (AIMD): the router knows the caps, we only see refusals.
        self.capacity = float(config.max_in_flight)
        # The most calls in flight at once that the analyzers accepted: slots above it are probes and stay small.
        self.proven_slots = 0
        self.no_analyzer_logged = False
        self.packed_refused_until = 0.0  # clock time until which packed calls fall back to compact
        self.active = False
        self.max_window = int(config.window / 0.05) + 1
        self.interest = TopicInterest("nerve.")  # who receives analysis events and nerve.samples
        self.latencies = deque(maxlen=LATENCY_SAMPLES)  # seconds from a measurement's ts to its analysis
        self.latency_counts = [0] * (len(LATENCY_EDGES_MS) + 1)  # the same, counted per LATENCY_EDGES_MS bucket
        self.call_times = deque(maxlen=LATENCY_SAMPLES)  # seconds per nerve.analyze round trip
        self.deadlines_missed = 0  # nerve.analyze calls in a row that ran out of call_deadline()
        self.arrivals = deque(maxlen=LATENCY_SAMPLES)  # seconds from a measurement's ts to its arrival here
        self.samples_received = {}  # host_id -> window rows received since the last nerve.samples
        self.heard = []  # hosts reported silent that sent a measurement since the last digest tick
        # A standby's last rounds of received samples: the active one may die holding a round it never handed over,
        # so the first nerve.samples after a takeover carries these too (the recorder skips what it already has).
        self.samples_held = deque(maxlen=SAMPLES_HANDOVER_ROUNDS)

    # -- input -------------------------------------------------------------------------
    @on(MEASURE_TOPIC_PREFIX, match="prefix")
    def on_measure(self, event, details=None):
        """Validate a measurement, drop duplicates, append it to the host's window and pending work."""
        now = self.clock()
        validate_measure(event, now, topic=getattr(details, "topic", None))
        host = self.hosts.get(event["host_id"])
        if host is None:
            host = self.hosts[event["host_id"]] = HostRecord(event["host_id"], self.max_window)
        run, seq = event.get("run"), event["seq"]
        if run == host.run and seq <= host.last_seq:
            self.stats["duplicates"] += 1
            return
        if run == host.run and seq > host.last_seq + 1:
            self.stats["gaps"] += seq - host.last_seq - 1
        host.run, host.last_seq, host.interval = run, seq, event["interval"]
        host.hostname = str(event.get("hostname", host.host_id))[:255]
        host.last_ts, host.stale_at = max(host.last_ts, event["ts"]), now + max(self.config.stale_after, 3 * host.interval)
        host.silent_at = now + self.down_after(host)
        if host.silent:
            host.silent = False
            self.heard.append(host.host_id)
        host.digest_dirty = True
        ts, metrics = event["ts"], event["metrics"]
        host.latest_metrics = metrics
        row = host.window.append(seq, ts, metrics)
        if self.config.samples_every:
            self.samples_received.setdefault(host.host_id, []).append(row)
        host.window.drop_before(host.last_ts - self.config.window)
        if host.pending and ts <= host.pending[-1][1]:
            self.stats["out_of_order"] += 1  # analysis needs increasing time; the window still keeps it
        else:
            # The window's own row, not a copy: pending work costs a list slot while the window holds the
            # sample, and an untracked tuple after, however long the analyzers are away.
            host.pending.append(row)
            if not host.in_flight:
                self.due[host.host_id] = host
            if len(host.pending) > self.config.max_pending:
                del host.pending[0]
                self.stats["coalesced"] += 1
        self.stats["received"] += 1
        self.arrivals.append(now - event["ts"])
        self._schedule_dispatch(self.config.batch_delay)

    # -- dispatch ----------------------------------------------------------------------
    def _schedule_dispatch(self, delay):
        if self.dispatch_call is None or not self.dispatch_call.active():
            self.dispatch_call = self.scheduler.callLater(max(delay, self.saturated_until - self.clock(), 0), self.dispatch)

    def due_hosts(self):
        """Hosts with samples waiting and no call in flight, longest due first."""
        return list(self.due.values())

    def dispatch(self):
        """Send due hosts to the analyzers in batches, up to the in-flight cap."""
        if not self.active or not self.mesh.connected or self.clock() < self.saturated_until:
            return
        due = self.due_hosts()
        limit = math.ceil(min(self.capacity, self.config.max_in_flight))
        free = limit - self.in_flight_calls
        if not due or free <= 0:
            return  # the next completed call dispatches again
        # A backlog bigger than the free slots take at batch_size is spread over them (up to max_batch_size per
        # call): otherwise throughput stops at slots x batch_size hosts per round trip while the analyzers idle.
        # Only proven slots get the big batches; a refused probe then wastes one small call, not a thousand hosts.
        small = self.config.batch_size
        big = max(1, min(self.proven_slots, limit) - self.in_flight_calls)
        size = small
        if len(due) > free * small:
            size = min(math.ceil((len(due) - (free - big) * small) / big), self.config.max_batch_size)
        start = 0
        for slot in range(free):
            if start >= len(due):
                break
            end = self._within_call_bytes(due, start, start + (size if slot < big else small))
            self._send(due[start:end])
            start = end

    @staticmethod
    def _within_call_bytes(due, start, end):
        """The end (after start, at most `end`) that keeps due[start:end]'s call under MAX_CALL_BYTES (estimated)."""
        budget = MAX_CALL_BYTES
        for index in range(start, min(end, len(due))):
            host = due[index]
            metrics = len(host.latest_metrics)
            budget -= 100 + metrics * (STATE_BYTES_PER_METRIC + SAMPLE_BYTES_PER_METRIC * len(host.pending))
            if budget < 0 and index > start:
                return index
        return end

    def _send(self, batch):
        work = []
        for host in batch:
            host.in_flight = True
            del self.due[host.host_id]
            work.append((host, host.pending))
            host.pending = []
        wire = self.wire()
        # Packed calls carry the window's rows as they are; the other forms are for analyzers that want plain values.
        payload = [{"host_id": host.host_id, "state": host.state,
                    "samples": samples if wire == "packed" else [as_sample(row) for row in samples]} for host, samples in work]
        self.in_flight_calls += 1
        self.stats["calls"] += 1
        sent_at = self.clock()
        options = {} if wire == "full" else {"compact": True}
        call = self.mesh.call(ANALYZE_URI, pack_batch(payload) if wire == "packed" else payload,
                              timeout=self.call_deadline(), **options)
        call.addCallbacks(self._on_result, self._on_failure, callbackArgs=(work, sent_at), errbackArgs=(work, wire))
        call.addErrback(lambda failure: log.failure("handling an analysis result failed", failure))

    def call_deadline(self):
        """Seconds the next nerve.analyze call may take before its hosts are sent again (see MIN_CALL_DEADLINE)."""
        slowest = max(islice(reversed(self.call_times), RECENT_CALLS), default=0.0)
        deadline = max(MIN_CALL_DEADLINE, CALL_DEADLINE_FACTOR * slowest) * 2 ** min(self.deadlines_missed, 10)
        return min(deadline, self.config.call_timeout)

    def wire(self):
        """The form of the next nerve.analyze call: the configured one, or compact while an analyzer refuses packed."""
        wire = self.config.analysis_wire
        return "compact" if wire == "packed" and self.clock() < self.packed_refused_until else wire

    def _finish(self, work):
        self.in_flight_calls -= 1
        for host, _ in work:
            host.in_flight = False
            if host.pending:
                self.due[host.host_id] = host

    @staticmethod
    def _results_of(answer, hosts):
        """The per-host results of an analyzer's answer, unpacked if packed; InvalidArgument unless one per host."""
        results = answer.get("hosts", []) if isinstance(answer, dict) else []
        if isinstance(results, bytes):
            results = unpack_batch(results, "analyzer answer hosts")
        if not isinstance(results, list) or len(results) != hosts:
            count = len(results) if isinstance(results, list) else type(results).__name__
            raise InvalidArgument(f"analyzer returned {count} results for {hosts} hosts")
        return results

    def _on_result(self, result, work, sent_at):
        try:
            results = self._results_of(result, len(work))
        except InvalidArgument as error:
            # A malformed answer is a failed call: the samples go back to their hosts, not into the void.
            return self._on_failure(Failure(error), work)
        self.proven_slots = max(self.proven_slots, self.in_flight_calls)
        self._finish(work)
        self.backoff = 0.0
        self.deadlines_missed = 0
        self.capacity = min(self.capacity + 1.0 / max(self.capacity, 1.0), float(self.config.max_in_flight))
        self.no_analyzer_logged = False
        analyzer = result.get("analyzer")
        now = self.clock()
        self.call_times.append(now - sent_at)
        self.stats["analysed"] += sum(len(samples) for _, samples in work)
        done, first = {}, {}
        for (host, samples), analysed in zip(work, results):
            self._publish_analysis(host, samples, analysed, analyzer, now)
            done[host.host_id] = [host.analysed_seq, host.analysed_ts, host.level_name]
            first[host.host_id] = [samples[0][0], samples[0][1], len(samples)]
        # Standbys follow this (one event per call, not per host) to drop the work already done; `samples` (the first
        # sample's seq and ts, and how many) says which seqs the call analysed, for a counter outside (chaos_bench).
        # Without a standby nobody does, and the router would still parse every host of it.
        if self.interest.wants(ANALYSED_URI):
            self.mesh.publish(ANALYSED_URI, {"hosts": done, "samples": first})
        if self.due:
            self._schedule_dispatch(0)

    def _on_failure(self, failure, work, wire=None):
        self._finish(work)
        for host, samples in work:
            # Put the work back in front of anything newer; coalesce to the newest max_pending samples.
            host.pending = (samples + host.pending)[-self.config.max_pending:]
            self.due[host.host_id] = host  # only due hosts are sent, so samples is never empty
        error = failure.value
        uri = getattr(error, "error", None)
        self.stats["retries"] += 1
        if uri in BACKPRESSURE_ERRORS:
            self.stats["backpressure"] += 1
            self.capacity = max(1.0, float(self.in_flight_calls))
            self.proven_slots = min(self.proven_slots, self.in_flight_calls)
            if self.in_flight_calls == 0:
                # Nothing of ours is in flight, yet every slot is taken (another caller): back off in time.
                self.backoff = min(max(self.backoff * 2, 0.02), 0.5)
                self.saturated_until = self.clock() + self.backoff
        elif uri == InvalidArgument.uri and wire == "packed":
            # Orchestrators validate what they send, so a refused packed call means an analyzer older than the form.
            if self.clock() >= self.packed_refused_until:
                log.warn("an analyzer refused a packed nerve.analyze call ({error}); sending compact calls for {seconds:.0f} s: "
                         "upgrade the analyzers, or start the orchestrator with --analysis-wire compact",
                         error=_reason(error), seconds=PACKED_REFUSED_SECONDS)
            self.stats["packed_refused"] += 1
            self.packed_refused_until = self.clock() + PACKED_REFUSED_SECONDS
        elif uri in NO_ANALYZER_ERRORS:
            if not self.no_analyzer_logged:
                log.warn("no analyzer is connected; holding work until one registers {uri}", uri=ANALYZE_URI)
                self.no_analyzer_logged = True
            self.saturated_until = self.clock() + 0.25
        elif isinstance(error, defer.CancelledError):
            self.stats["deadlines_missed"] += 1
            self.deadlines_missed += 1
            log.info("an analyzer did not answer within its deadline; sending its {hosts} hosts again", hosts=len(work))
        else:
            # A callee that died mid-call: the work goes to whichever analyzer is next.
            log.info("analysis call failed ({error}); retrying", error=_reason(error))
        if self.in_flight_calls == 0 or uri not in BACKPRESSURE_ERRORS:
            self._schedule_dispatch(self.backoff if uri in BACKPRESSURE_ERRORS else 0.05)

    # -- output ------------------------------------------------------------------------
    def _publish_analysis(self, host, samples, analysed, analyzer, now):
        host.state, host.result, host.analysis = analysed.get("state"), analysed, None
        self._set_level(host, analysed.get("level"))
        seq, ts, _, _ = samples[-1]
        host.analysed_seq, host.analysed_ts, host.analyzed_at, host.analyzer = seq, ts, round(now, 3), analyzer
        latency = now - ts
        self.latencies.append(latency)
        self.latency_counts[bisect_left(_LATENCY_EDGES_S, latency)] += 1
        topic = ANALYSIS_TOPIC_PREFIX + host.host_id
        if self.config.analysis_events == "all" or self.interest.wants(topic):
            self.mesh.publish(topic, self.analysis_of(host))
        else:
            self.stats["analysis_unwatched"] += 1
        for change in analysed.get("changes", []):
            alert = dict(change, host_id=host.host_id, hostname=host.hostname)
            host.alerts.append(alert)
            self.stats["alerts"] += 1
            self.mesh.publish(f"nerve.alert.{host.host_id}", alert)

    def analysis_of(self, host):
        """The host's latest analysis event (built from the analyzer's answer on first use), or None."""
        if host.analysis is None and host.result is not None:
            described = describe_compact(host.result) if "anomaly" in host.result else host.result
            host.analysis = {"host_id": host.host_id, "hostname": host.hostname, "seq": host.analysed_seq,
                             "ts": host.analysed_ts, "analyzed_at": host.analyzed_at, "analyzer": host.analyzer,
                             "level": described.get("level"), "metrics": described.get("metrics", {})}
        return host.analysis

    @staticmethod
    def _set_level(host, level):
        # Only a new level puts the host in the next digest: an unchanged one would send every host twice a second.
        if level != host.level_name:
            host.level_name, host.digest_dirty = level, True

    @staticmethod
    def digest_row(host, now):
        """One host's line in the digest, its values in DIGEST_FIELDS order: level, ts, seq, staleness, headline values."""
        latest = host.latest_metrics
        # A host known only from the alert keeper (DOWN before this orchestrator started) has no measurement: ts null.
        row = [host.presence or host.level_name, host.last_ts if host.last_seq >= 0 else None, host.last_seq,
               now > host.stale_at]
        for name in HEADLINE_METRICS:
            value = latest.get(name)
            # Four significant digits, more than any view shows: a fleet's digests and snapshot carry a tenth fewer
            # bytes per host for each value than a float's 17 digits (nerve.history keeps the exact values).
            row.append(float(f"{value:.4g}") if isinstance(value, float) else value)
        return row

    @every(lambda config: config.tick)
    def publish_digest(self):
        """One event per tick with the entries of the hosts that changed since the last one (active orchestrator only).

        One event per tick whatever the number of hosts, each host at most once: a dashboard
        pays O(1) messages per tick; nerve.snapshot gives a late joiner everything.
        """
        now = self.clock()
        if not self.active:
            self._follow_silence(now)
            return
        if self.due:
            self._schedule_dispatch(0)
        changed, silent = {}, []
        # Every host is looked at each tick, so the check is two attribute reads; entries are built only for changes.
        for host_id, host in self.hosts.items():
            stale = now > host.stale_at
            if host.digest_dirty or stale != host.digest_stale:
                host.digest_dirty, host.digest_stale = False, stale
                changed[host_id] = self.digest_row(host, now)
            if stale and self._turns_silent(host, now):
                silent.append(host_id)
        self.mesh.publish("nerve.digest", {"ts": round(now, 3), "lag": self.lag_seconds(), "fields": DIGEST_FIELDS,
                                           "hosts": changed})
        if silent or self.heard:
            self.mesh.publish(SILENCE_TOPIC, {"ts": round(now, 3), "silent": silent, "heard": self.heard})
            self.heard = []

    # -- silent hosts: nerve.orchestrator.silence ----------------------------------------
    def down_after(self, host):
        """Seconds without a measurement after which a host is silent: --down-after, at least 10 of its intervals."""
        return max(self.config.down_after, 10 * host.interval)

    @staticmethod
    def _turns_silent(host, now):
        """Flag a host silent when its down_after has passed; whether it just turned so."""
        if host.silent or now <= host.silent_at:
            return False
        host.silent = True
        return True

    def _follow_silence(self, now):
        # A standby flags silent hosts as the active one does, without saying so: after a takeover it reports what
        # changes (a host heard again), not every silent host a second time.
        for host in self.hosts.values():
            self._turns_silent(host, now)
        self.heard = []

    @procedure(SILENT_URI, invoke="first")
    def silent_hosts(self):
        """The hosts silent now (reported on nerve.orchestrator.silence, not heard since): {ts, silent: [ids]}."""
        silent = sorted(host.host_id for host in self.hosts.values() if host.silent)
        return {"ts": round(self.clock(), 3), "silent": silent}

    @on_join
    def restart_silence_clock(self):
        """After every (re)join, every host gets a full down_after again: nothing could be heard while away, and a
        router restart must not make the whole fleet silent at once."""
        now = self.clock()
        for host in self.hosts.values():
            host.silent_at = max(host.silent_at, now + self.down_after(host))

    def lag_seconds(self):
        """How far analysis is behind: the age of the oldest sample still waiting (0 when caught up)."""
        oldest = min((host.pending[0][1] for host in self.hosts.values() if host.pending), default=None)
        return round(max(self.clock() - oldest, 0.0), 3) if oldest is not None else 0.0

    # -- nerve.samples: every measurement, batched once a second, for recorders and exporters -----------------
    @every(lambda config: config.samples_every or 3600.0, now=False)
    def publish_samples(self):
        """Publish the measurements received since the last call as nerve.samples events (active orchestrator only)."""
        received, self.samples_received = self.samples_received, {}
        if not self.active:
            self.samples_held.append(received)
            return
        if self.samples_held:
            received = merged_samples([*self.samples_held, received])
            self.samples_held.clear()
        if not received or not self.interest.wants(SAMPLES_TOPIC):
            return  # a recorder that subscribes later fills its gap from nerve.samples.since
        self._publish_sample_chunks(samples_events(received, self.hosts, self.clock(), self.config.mesh.authid))

    def _publish_sample_chunks(self, events):
        # One chunk per reactor turn: building every host's entry at once held measurements and the digest back
        # for the whole fleet's worth of work each second.
        event = next(events, None)
        if event is not None and self.mesh.connected:
            self.mesh.publish(SAMPLES_TOPIC, event)
            self.stats["samples_events"] += 1
            self.scheduler.callLater(0, self._publish_sample_chunks, events)

    @procedure("nerve.samples.since", invoke="first")
    def samples_since(self, since, hosts=None, after=None):
        """Every host's window samples after `since` as nerve.samples host entries, a page of hosts at a time.

        Pages hold at most SAMPLES_SINCE_MAX_ROWS samples; `next` is the `after` of the next page (null at the end).
        """
        if not finite_number(since):
            raise InvalidArgument(f"since must be epoch seconds (a number), got {since!r:.40}")
        if hosts is not None and (not isinstance(hosts, list) or not all(isinstance(host, str) for host in hosts)):
            raise InvalidArgument("hosts must be a list of host ids or null (every host)")
        if after is not None and not isinstance(after, str):
            raise InvalidArgument(f"after must be the `next` of the previous page (a host id) or null, got {after!r:.40}")
        return samples_page(self.hosts, since, hosts, after, SAMPLES_SINCE_MAX_ROWS)

    # -- leadership --------------------------------------------------------------------
    @procedure(LEADER_URI, invoke="first")
    def leader(self):
        """The session id of the orchestrator the router routes to first: the active one."""
        return self.mesh.session.session_id

    @on_join
    def start_as_standby(self):
        """After every (re)join, act only once the router confirms this one is first."""
        self.active = False
        return self.check_leadership()

    @on_join
    def load_interest(self):
        """Learn who subscribes to analysis events; until then (or if the router refuses) publish them all."""
        loading = self.interest.load(self.mesh.session)
        return loading.addErrback(lambda failure: log.warn("cannot read the router's subscriptions ({error}); publishing "
                                                         "every analysis event", error=failure.getErrorMessage()))

    @on("wamp.subscription.on_create")
    def subscription_created(self, session_id, subscription):
        """A first subscriber created a subscription: analysis events on its topics now have a receiver."""
        self.interest.add(subscription)

    @on("wamp.subscription.on_delete")
    def subscription_deleted(self, session_id, subscription_id):
        """The last subscriber of a subscription left."""
        self.interest.remove(subscription_id)

    @every(0.5, now=False)
    @defer.inlineCallbacks
    def check_leadership(self):
        """Ask the router who is first; become active or standby accordingly."""
        try:
            leader = yield self.mesh.call(LEADER_URI, timeout=2)
        except (ApplicationError, defer.CancelledError):
            return
        active = self.mesh.connected and leader == self.mesh.session.session_id
        if active != self.active:
            self.active = active
            self.stats["takeovers" if active else "standby"] += 1
            log.info("this orchestrator is now {state}", state="active" if active else "a standby")
            if active:
                self._schedule_dispatch(0)

    @on(ANALYSED_URI)
    def follow_analysed(self, analysed):
        """As a standby, drop pending work the active orchestrator has analysed."""
        if self.active:
            return
        for host_id, (seq, ts, level) in analysed["hosts"].items():
            host = self.hosts.get(host_id)
            if host is not None and isinstance(ts, (int, float)):
                host.analysed_seq, host.analysed_ts = seq, ts
                self._set_level(host, level)
                host.pending = [row for row in host.pending if row[1] > ts]
                if not host.pending:
                    self.due.pop(host_id, None)

    @on("nerve.alert.", match="prefix")
    def follow_alert(self, alert):
        """As a standby, keep the active orchestrator's alert history for nerve.history."""
        host = self.hosts.get(alert.get("host_id")) if isinstance(alert, dict) else None
        if not self.active and host is not None and "level" in alert:
            host.alerts.append(alert)

    # -- host presence: the alert keeper's host events (components/alerts) ------------------
    @on("nerve.alert.", match="prefix")
    def follow_host_presence(self, alert):
        """A host whose tracker session was lost (DOWN) or said goodbye (OFFLINE) shows so as its digest level."""
        host = self.hosts.get(alert.get("host_id")) if isinstance(alert, dict) and alert.get("metric") == "host" else None
        if host is not None:
            presence = alert.get("level") if alert.get("level") in ("DOWN", "OFFLINE") else None
            host.presence, host.digest_dirty = presence, host.digest_dirty or presence != host.presence

    @on_join
    def load_presence(self):
        """After every (re)join, the hosts the alert keeper has open DOWN alerts for, or says are OFFLINE, join the
        fleet so: such a host sends nothing, so an orchestrator started after it left would not know it at all."""
        asking = self.mesh.call(ALERTS_OPEN_URI)
        asking.addCallbacks(self.apply_open_presence, self._presence_unknown)
        return asking

    def apply_open_presence(self, answer):
        """Add the hosts of the DOWN alerts and the OFFLINE hosts of a nerve.alerts.open answer that have not
        reported since this join."""
        answer = answer if isinstance(answer, dict) else {}
        alerts = answer["alerts"] if isinstance(answer.get("alerts"), list) else []
        offline = answer["offline"] if isinstance(answer.get("offline"), list) else []
        away = [(alert.get("host_id"), "DOWN", alert.get("hostname")) for alert in alerts
                if isinstance(alert, dict) and alert.get("metric") == "host" and alert.get("level") == "DOWN"]
        away += [(host_id, "OFFLINE", None) for host_id in offline]
        for host_id, presence, hostname in away:
            # A host that reported since is up, whatever the keeper said when it answered; its events come live.
            if isinstance(host_id, str) and HOST_ID_PATTERN.match(host_id) and host_id not in self.hosts:
                host = self.hosts[host_id] = HostRecord(host_id, self.max_window)
                host.hostname = str(hostname or host_id)[:255]
                host.presence = presence

    @staticmethod
    def _presence_unknown(failure):
        if getattr(failure.value, "error", None) != "wamp.error.no_such_procedure":  # no keeper runs: nothing is DOWN
            log.warn("cannot read the alert keeper's open alerts ({error}); hosts that went DOWN or OFFLINE before this "
                     "orchestrator started are not shown",
                     error=failure.getErrorMessage())

    # -- queries -----------------------------------------------------------------------
    @procedure("nerve.snapshot", invoke="first")
    def snapshot(self, recent=0, metric="cpu", table=False):
        """Every host's digest entry and hostname, and the schema, for late joiners.

        With `recent` N > 0 each entry also carries `recent`: the host's last N values of `metric`,
        oldest first, so a page that opens now draws its sparklines at once instead of from empty.
        With `table` true, `fields` names the entries' fields once and each host maps to its values in
        that order: about 40 % fewer bytes, which a page opening on 5,000 hosts waits for.
        """
        if isinstance(recent, bool) or not isinstance(recent, int) or not 0 <= recent <= MAX_RECENT_SAMPLES:
            raise InvalidArgument(f"recent must be a whole number of samples from 0 to {MAX_RECENT_SAMPLES}, got {recent!r:.40}")
        if recent and (not isinstance(metric, str) or family_of(metric) not in MEASURE_SCHEMA):
            raise InvalidArgument(f"metric must be a metric of the measurement schema (e.g. 'cpu'), got {metric!r:.60}")
        if not isinstance(table, bool):
            raise InvalidArgument(f"table must be true (rows under `fields`) or false (an entry per host), got {table!r:.40}")
        now, fields = self.clock(), [*DIGEST_FIELDS, "hostname", *(["recent"] if recent else [])]
        hosts = {}
        for host_id, host in self.hosts.items():
            row = self.digest_row(host, now)
            row.append(host.hostname)
            if recent:
                row.append(host.window.latest_values(metric, recent))
            hosts[host_id] = row if table else dict(zip(fields, row))
        answer = {"ts": round(now, 3), "schema": self.schema(), "hosts": hosts}
        if table:
            answer["fields"] = fields
        return answer

    @procedure("nerve.history", invoke="first")
    def history(self, host_id, since=None):
        """A host's window of samples (after `since`, epoch seconds), its latest analysis and recent alerts."""
        host = self._known_host(host_id)
        if since is not None and not finite_number(since):
            raise InvalidArgument(f"since must be epoch seconds (a number), got {since!r:.40}")
        samples = host.window.samples(since)
        return {"host_id": host_id, "hostname": host.hostname, "samples": samples,
                "analysis": self.analysis_of(host), "alerts": list(host.alerts)}

    @procedure("nerve.analyze_host", invoke="first")
    @defer.inlineCallbacks
    def analyze_host(self, host_id, seconds=60.0):
        """Analyse the last `seconds` of a host's window now, from a fresh state, and return the result."""
        host = self._known_host(host_id)
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 0 < seconds <= self.config.window:
            raise InvalidArgument(f"seconds must be a number in (0, {self.config.window:g}], got {seconds!r:.40}")
        samples = [sample for sample in host.window.samples() if sample["ts"] >= host.last_ts - seconds]
        samples.sort(key=lambda sample: sample["ts"])
        payload = [{"host_id": host_id, "state": None, "samples": samples}]
        for attempt in range(20):
            try:
                result = yield self.mesh.call(ANALYZE_URI, payload, timeout=self.config.call_timeout)
                break
            except ApplicationError as error:
                if error.error in NO_ANALYZER_ERRORS:
                    raise ApplicationError(error.error, "no analyzer is connected to serve nerve.analyze; "
                                                        "start one with `nerve analyzer`")
                if error.error not in BACKPRESSURE_ERRORS:
                    raise
                yield task.deferLater(self.scheduler, min(0.05 * 2 ** attempt, 1.0), lambda: None)
        else:
            raise Unavailable("every analyzer stayed at its concurrency cap for 20 tries; try again later")
        analysed = result["hosts"][0]
        return {"host_id": host_id, "samples": len(samples), "seconds": seconds, "analyzer": result.get("analyzer"),
                "level": analysed.get("level"), "metrics": analysed.get("metrics", {})}

    def _known_host(self, host_id):
        if not isinstance(host_id, str):
            raise InvalidArgument(f"host_id must be a string, got {type(host_id).__name__}")
        host = self.hosts.get(host_id)
        if host is None:
            raise NotFound(f"no host '{host_id:.64}' has reported; nerve.snapshot lists the known hosts")
        return host

    @procedure("nerve.schema", invoke="first")
    def schema(self):
        """The measurement and analysis schemas (fields, labels, units) so clients render metrics generically."""
        return {"measure": MEASURE_SCHEMA, "analysis": ANALYSIS_SCHEMA}

    @procedure("nerve.stats", invoke="first")
    def get_stats(self):
        """Counters: received, analysed, duplicates, gaps, dropped per publisher, backlog, calls in flight, collections."""
        backlog = sum(len(host.pending) for host in self.hosts.values())
        return dict(self.stats, active=self.active, hosts=len(self.hosts), backlog=backlog, in_flight=self.in_flight_calls,
                    capacity=round(self.capacity, 2), analysis_latency=_percentiles_ms(self.latencies),
                    analysis_latency_histogram={"edges_ms": list(LATENCY_EDGES_MS), "counts": list(self.latency_counts)},
                    call_time=_percentiles_ms(self.call_times), arrival_latency=_percentiles_ms(self.arrivals),
                    watched_hosts=sum(self.interest.wants(ANALYSIS_TOPIC_PREFIX + host_id) for host_id in self.hosts),
                    lag_seconds=self.lag_seconds(), gc=collection_stats(),
                    dropped=dict(self.mesh.dropped), handler_errors=dict(self.mesh.errors))


def _reason(error):
    """What a failed call's error says: an ApplicationError's message, or the exception itself."""
    return error.error_message() if isinstance(error, ApplicationError) else error


def _percentiles_ms(seconds):
    """{p50_ms, p99_ms, samples} of a collection of durations in seconds, or None when empty."""
    ordered = sorted(seconds)
    if not ordered:
        return None
    return {"p50_ms": round(ordered[len(ordered) // 2] * 1000, 1), "p99_ms": round(ordered[int(len(ordered) * 0.99)] * 1000, 1),
            "samples": len(ordered)}
