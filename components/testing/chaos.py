"""Chaos for a whole supervised mesh: `nerve up` under faults, counted from outside.

The mesh is `nerve up --hosts H --analyzers 2 --orchestrators 2` (an active and a hot standby orchestrator), so
every fault is healed by the supervisor and the mesh itself, never by this code. After a warm-up, a fault every
`gap` seconds (seeded): the kinds of FAULT_KINDS, each once in a seeded order first, then chosen at random.

An operator session outside the mesh (Observer, reconnecting on its own when the router goes) counts:
- every (host, seq) analysed, from `nerve.orchestrator.analysed` (one event per analyze call: each host's last seq
  and ts, and in `samples` its first seq, ts and how many): per host, the seqs covered must run without a hole from
  the first the observer saw to the last the active orchestrator received at the end (nerve.snapshot). A hole
  between two events the observer received in one session is lost; one across its reconnect is unobserved (it was
  away when the event could have come).
- alerts (`nerve.alert.` prefix): no (host, metric, seq) twice.
- notifications: `nerve up --notify` with one webhook channel to a receiver in this process (group_wait 1 s): every
  alert record the keeper published as firing (`nerve.alerts.changed`) reaches the webhook as firing, every one it
  resolved after that as resolved, and no de-duplication key (alert id, status, repeat) arrives twice.
- recorded measurements: per host, from the first to the last seq the observer saw handed to the recorder
  (`nerve.samples`, with their exact ts), the recorder's 1 s tier (`nerve.history.range`) holds one point per seq.
- measurement -> analysis latency of every sample: arrival of its analysed event minus its ts (a call's samples
  between the first and the last get ts interpolated by seq). A sample not analysed yet counts too, once it is
  overdue: a host whose newest analysed sample is older than `interval + p99_limit` at a window's end has one
  waiting longer than the limit (so hosts stuck in a call that never returns are seen, not just missing). A fault
  is recovered once the rolling 1 s p99 (windows every 0.1 s) is under `p99_limit` and stays so until the next
  fault (or the end); a window with nothing analysed and nothing overdue counts as not recovered.
- RSS of the router worker and of the active orchestrator after the warm-up and at the end.

bench/chaos_bench.py runs it for 10 minutes and prints `report(result)`; tests/test_chaos.py runs a short one.
"""

import json
import os
import random
import signal
import tempfile
import time
from collections import Counter
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy
import psutil
from autobahn.wamp.types import SubscribeOptions
from twisted.internet import defer, reactor, task, threads

from components.testing.live import MeshUpProcess, call_until, sleep
from components.testing.receivers import WebhookReceiver

ANALYSED_TOPIC = "nerve.orchestrator.analysed"
ALERT_PREFIX = "nerve.alert."
ALERTS_CHANGED_TOPIC = "nerve.alerts.changed"
SAMPLES_TOPIC = "nerve.samples"
RANGE_URI = "nerve.history.range"
TS_TOLERANCE = 0.01  # seconds: a recorded ts may differ this much from the one handed over (packing)
LEADER_URI = "nerve.orchestrator.leader"
STEP = 0.1  # seconds between the starts of the rolling 1 s windows
WINDOW = 1.0


# -- faults --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultKind:
    """One kind of fault: what it does, the recovery bound (seconds to p99 < 1 s), how its target is chosen from the
    supervisor's status (a child's name, or None) and what is done to the target's pid."""

    describe: str
    bound: float
    target: Callable  # (run, pick: float in [0, 1)) -> Deferred of a child name, or None
    inject: Callable  # (run, pid) -> None


def _child_of_group(group):
    @defer.inlineCallbacks
    def target(run, pick):
        status = yield run.status()
        names = sorted(child["name"] for child in status["children"]
                       if child["group"] == group and child["state"] == "running" and child["pid"])
        return names[int(pick * len(names))] if names else None

    return target


def _child_named(name):
    def target(run, pick):
        return defer.succeed(name)

    return target


@defer.inlineCallbacks
def _active_orchestrator(run, pick):
    # The router routes nerve.orchestrator.leader (invoke='first') to its first callee: that one is active.
    session = run.observer.session
    registration = yield session.call("wamp.registration.lookup", LEADER_URI, {"match": "exact"})
    callees = (yield session.call("wamp.registration.list_callees", registration)) if registration else []
    if not callees:
        return None
    details = yield session.call("wamp.session.get", callees[0])
    return details["authid"]  # nerve up names its orchestrators by their authids: orchestrator, orchestrator-2


def _sigkill(run, pid):
    os.kill(pid, signal.SIGKILL)


def _sigstop_for(seconds):
    def inject(run, pid):
        os.kill(pid, signal.SIGSTOP)
        run.stopped.add(pid)
        reactor.callLater(seconds, run.resume, pid)

    return inject


# The faults a run draws from; a kind is picked by name with `kinds` (chaos_bench.py --kinds). The bound of a kind
# that leaves the pipeline alone (the notifier) is the pipeline's too: a fault there must not slow analysis.
FAULT_KINDS = {
    "kill-analyzer": FaultKind("SIGKILL an analyzer", 3.0, _child_of_group("analyzer"), _sigkill),
    "kill-orchestrator": FaultKind("SIGKILL the active orchestrator", 5.0, _active_orchestrator, _sigkill),
    "kill-router": FaultKind("SIGKILL the router (its controller; the worker goes with it)", 5.0,
                             _child_named("router"), _sigkill),
    "stop-analyzer": FaultKind("SIGSTOP an analyzer for 10 s, then SIGCONT", 3.0, _child_of_group("analyzer"),
                               _sigstop_for(10.0)),
    "kill-notifier": FaultKind("SIGKILL the notifier", 3.0, _child_named("notifier"), _sigkill),
    "kill-recorder": FaultKind("SIGKILL the recorder", 3.0, _child_named("recorder"), _sigkill),
}
NOTIFY_CONFIG = """\
[channels.chaos]
type = "webhook"
url = "{url}"

[[routes]]
channels = ["chaos"]
group_wait = "1s"
"""


@dataclass(frozen=True)
class ChaosSettings:
    """A chaos run: the mesh, the fault phase and the bounds."""

    hosts: int = 1000
    seconds: float = 600.0  # the fault phase, after the warm-up
    seed: int = 0
    gap: tuple = (20.0, 40.0)  # seconds between faults, uniform
    kinds: tuple = tuple(FAULT_KINDS)
    warmup: float = 75.0  # before the first memory reading and the fault phase; longer than the window
    window: float = 60.0  # the orchestrators' --window (NERVE_WINDOW), so their windows are full after the warm-up
    calm: float = 15.0  # no fault starts in the phase's last `calm` seconds
    p99_limit: float = 1.0
    interval: float = 1.0  # the simulator's (and the tracker's) seconds between measurements
    memory_margin: float = 0.20
    catch_up: float = 20.0  # at most this long for the last received seqs to be analysed (and notified) at the end
    analyzers: int = 2

    def schedule(self):
        """[(seconds into the phase, kind, pick in [0, 1))]: every kind once in a seeded order, then at random."""
        rng = random.Random(self.seed)
        kinds = list(self.kinds)
        rng.shuffle(kinds)
        faults, at = [], 0.0
        while True:
            at += rng.uniform(*self.gap)
            if at > self.seconds - self.calm:
                return faults
            kind = kinds[len(faults)] if len(faults) < len(kinds) else rng.choice(self.kinds)
            faults.append((round(at, 1), kind, rng.random()))


@dataclass
class Fault:
    """One fault injected: when (epoch s and seconds into the phase), what, to whom, and how the mesh recovered."""

    at: float
    offset: float
    kind: str
    target: Optional[str]
    pid: Optional[int]
    bound: float
    until: float = 0.0  # the next fault or the end of the phase
    recovery: Optional[float] = None  # seconds from the fault to the start of the good windows; None: never
    peak_p99: float = float("nan")  # the worst rolling 1 s p99 before the next fault (s; windows with no data aside)
    problem: Optional[str] = None

    @property
    def ok(self):
        return self.problem is None and self.recovery is not None and self.recovery <= self.bound


@dataclass
class ChaosResult:
    """What a run saw: its faults, the counts, memory and the supervisor's last word."""

    settings: ChaosSettings
    faults: list = field(default_factory=list)
    published: int = 0
    analysed: int = 0
    lost: int = 0
    unobserved: int = 0
    reanalysed: int = 0
    hosts_checked: int = 0
    lost_examples: list = field(default_factory=list)
    alerts: int = 0
    duplicate_alerts: int = 0
    duplicate_examples: list = field(default_factory=list)
    notifications: int = 0  # alerts in webhook messages
    notified_alerts: int = 0  # alert records seen firing that were checked
    unnotified: list = field(default_factory=list)  # (alert id, status) published but never delivered
    duplicate_notifications: list = field(default_factory=list)  # keys delivered more than once
    recorded_checked: int = 0  # (host, seq) the recorder should hold
    unrecorded: int = 0  # of them, not in its 1 s tier
    unrecorded_examples: list = field(default_factory=list)  # (host, expected, recorded, (ts before, after a hole))
    memory: dict = field(default_factory=dict)  # name -> {"start": (pid, MB), "end": (pid, MB)}
    restarts: dict = field(default_factory=dict)
    states: dict = field(default_factory=dict)
    orchestrator_stats: dict = field(default_factory=dict)
    observer_reconnects: int = 0
    samples_late: tuple = (0, 0, 0)  # samples analysed, of them more than 1 s and more than 5 s after their ts
    phase_seconds: float = 0.0
    errors: list = field(default_factory=list)

    def failures(self):
        """Why the run fails (empty when it passes)."""
        why = list(self.errors)
        late = [f"{fault.kind} at {fault.offset:.0f} s " + (fault.problem or
                (f"recovered in {fault.recovery:.1f} s > {fault.bound:g} s" if fault.recovery is not None
                 else "never recovered")) for fault in self.faults if not fault.ok]
        why += late
        if not self.faults:
            why.append("no fault was injected")
        if self.lost:
            why.append(f"{self.lost} (host, seq) lost, e.g. {self.lost_examples[:3]}")
        if self.unobserved:
            why.append(f"{self.unobserved} (host, seq) unverified: the observer was reconnecting when they were analysed")
        if self.published == 0:
            why.append("nothing published was checked")
        if self.duplicate_alerts:
            why.append(f"{self.duplicate_alerts} duplicate alerts, e.g. {self.duplicate_examples[:3]}")
        if self.unnotified:
            why.append(f"{len(self.unnotified)} alert changes never notified, e.g. {self.unnotified[:3]}")
        if self.unrecorded:
            why.append(f"{self.unrecorded} measurements not recorded, e.g. {self.unrecorded_examples[:3]}")
        if self.recorded_checked == 0:
            why.append("no recorded measurement was checked")
        if self.duplicate_notifications:
            why.append(f"{len(self.duplicate_notifications)} notifications delivered twice, e.g. "
                       f"{self.duplicate_notifications[:3]}")
        for name, reading in self.memory.items():
            start, end = reading.get("start"), reading.get("end")
            if not start or not end:
                why.append(f"no {name} memory reading")
            elif end[1] > start[1] * (1 + self.settings.memory_margin):
                why.append(f"{name} RSS grew {end[1] / start[1] - 1:.0%} ({start[1]:.0f} -> {end[1]:.0f} MB)")
        failed = [name for name, state in self.states.items() if state != "running"]
        if failed:
            why.append("children not running at the end: " + ", ".join(f"{name} ({self.states[name]})" for name in failed))
        if self.restarts.get("simulator"):
            why.append("the simulator restarted (a new run restarts its seqs: the count is void)")
        return why


# -- the observer ----------------------------------------------------------------------------------------------------


class HostCoverage:
    """The seqs of one host analysed so far: sorted disjoint [first, last, epoch at first, epoch at last] runs."""

    __slots__ = ("runs", "missing")

    def __init__(self):
        self.runs = []
        self.missing = 0  # seqs inside a call that the call did not carry (its count short of last - first + 1)

    def add(self, first, last, epoch):
        """Cover first..last (seen in observer session `epoch`); returns how many of them were covered already."""
        runs = self.runs
        if runs and first == runs[-1][1] + 1:  # the usual case: right after the last run
            runs[-1][1], runs[-1][3] = last, epoch
            return 0
        overlap, merged, kept = 0, [first, last, epoch, epoch], []
        for run in runs:
            if run[1] < merged[0] - 1 or run[0] > merged[1] + 1:
                kept.append(run)
                continue
            overlap += max(0, min(run[1], last) - max(run[0], first) + 1)
            if run[0] < merged[0]:
                merged[0], merged[2] = run[0], run[2]
            if run[1] > merged[1]:
                merged[1], merged[3] = run[1], run[3]
        kept.append(merged)
        kept.sort()
        self.runs = kept
        return overlap

    def holes(self, last_seq, epoch_now):
        """[(first, last, observed)] of the seqs not covered from the first covered to last_seq; observed is False
        when the events on either side came in different observer sessions."""
        holes, runs = [], self.runs
        for before, after in zip(runs, runs[1:]):
            if after[0] <= last_seq:
                holes.append((before[1] + 1, min(after[0] - 1, last_seq), before[3] == after[2]))
        if runs and runs[-1][1] < last_seq:
            holes.append((runs[-1][1] + 1, last_seq, runs[-1][3] == epoch_now))
        return holes


MAX_PENDING_JOINS = 5


class Observer:
    """An operator session on the mesh that comes back by itself (every 0.1 s while the router is away) and counts
    analysed seqs, latencies and alerts."""

    def __init__(self, up, authid="chaos-observer"):
        self.up = up
        self.authid = authid
        self.session = None
        self.epoch = 0  # the joined session's; one per session
        self.epochs = 0  # handed out so far
        self.pending = 0  # join attempts in flight
        self.reconnects = 0
        self.coverage = {}
        self.reanalysed = 0
        self.arrivals = array("d")  # per sample analysed: when its analysed event arrived (epoch s)
        self.latencies = array("d")  # and how long after its ts
        self.freshness = {}  # host -> (arrivals, newest analysed ts at each), to see hosts analysis left behind
        self.alerts = {}
        self.duplicates = []
        self.records = {}  # alert id -> {status: when the observer first saw the keeper publish it}
        self.handed = {}  # host -> [[first seq, its ts], [last seq, its ts]] seen in nerve.samples
        self.loop = None

    @property
    def connected(self):
        return self.session is not None and self.session.is_attached()

    @defer.inlineCallbacks
    def start(self, timeout=30.0):
        """Join (retrying for up to timeout seconds), then keep joined until stop()."""
        deadline = time.monotonic() + timeout
        while not self.connected:
            yield self._connect()
            if not self.connected:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the observer could not join the mesh in {timeout:g} s")
                yield sleep(0.1)
        self.loop = task.LoopingCall(self._keep_joined)
        self.loop.start(0.1, now=False)

    def stop(self):
        if self.loop is not None and self.loop.running:
            self.loop.stop()
        session, self.session = self.session, None
        if session is not None and session.is_attached():
            return session.leave().addErrback(lambda failure: None)
        return defer.succeed(None)

    def _keep_joined(self):
        # A new attempt every tick until one joins: an attempt that hangs on a router still starting (up to its
        # timeout) must not keep the observer away once the router takes joins, or the components would be back
        # first and what they analyse meanwhile could only be counted as unobserved.
        if not self.connected and self.pending < MAX_PENDING_JOINS:
            self._connect()

    @defer.inlineCallbacks
    def _connect(self):
        self.pending += 1
        try:
            session = yield self.up.join("operator", self.authid).addTimeout(5, reactor)
            self.epochs += 1
            epoch = self.epochs
            # All at once: the components rejoin a restarted router within half a second too, and what is analysed
            # before the observer listens again can only be counted as unobserved.
            yield defer.gatherResults([
                session.subscribe(lambda event: self._on_analysed(event, epoch), ANALYSED_TOPIC),
                session.subscribe(self._on_alert, ALERT_PREFIX, options=SubscribeOptions(match="prefix")),
                session.subscribe(self._on_record, ALERTS_CHANGED_TOPIC),
                session.subscribe(self._on_samples, SAMPLES_TOPIC)], consumeErrors=True)
            if self.connected:  # another attempt joined first
                session.leave().addErrback(lambda failure: None)
                return
            if self.session is not None:
                self.reconnects += 1
            self.session, self.epoch = session, epoch
        except Exception:
            pass  # the router is away: the loop tries again
        finally:
            self.pending -= 1

    def _on_analysed(self, event, epoch):
        now = time.time()
        firsts = event.get("samples") or {}
        arrivals, latencies = self.arrivals, self.latencies
        for host_id, (seq, ts, _) in event["hosts"].items():
            first_seq, first_ts, count = firsts.get(host_id, (seq, ts, 1))
            coverage = self.coverage.get(host_id)
            if coverage is None:
                coverage = self.coverage[host_id] = HostCoverage()
            self.reanalysed += coverage.add(first_seq, seq, epoch)
            coverage.missing += max(0, seq - first_seq + 1 - count)
            fresh = self.freshness.get(host_id)
            if fresh is None:
                fresh = self.freshness[host_id] = (array("d"), array("d"))
            fresh[0].append(now)
            fresh[1].append(max(ts, fresh[1][-1]) if fresh[1] else ts)
            # Both arrays grow together or not at all: the recoveries pair them index by index.
            if count > 1:
                step = (ts - first_ts) / (count - 1)
                ages = [now - (first_ts + index * step) for index in range(count)]
            else:
                ages = [now - ts]
            latencies.extend(ages)
            arrivals.extend([now] * len(ages))

    def _on_alert(self, alert):
        if not isinstance(alert, dict):
            return
        key = (alert.get("host_id"), alert.get("metric"), alert.get("seq"))
        self.alerts[key] = self.alerts.get(key, 0) + 1
        if self.alerts[key] == 2:
            self.duplicates.append(key)

    def _on_record(self, record):
        if isinstance(record, dict) and record.get("status") in ("firing", "resolved"):
            self.records.setdefault(record.get("id"), {}).setdefault(record["status"], time.time())

    def _on_samples(self, event):
        for host_id, entry in (event.get("hosts") or {}).items() if isinstance(event, dict) else ():
            seqs, stamps = entry.get("seq") or [], entry.get("ts") or []
            if seqs and len(seqs) == len(stamps):
                span = self.handed.setdefault(host_id, [[seqs[0], stamps[0]], None])
                span[1] = [seqs[-1], stamps[-1]]

    def last_covered(self, host_id):
        coverage = self.coverage.get(host_id)
        return coverage.runs[-1][1] if coverage and coverage.runs else None


# -- the run ---------------------------------------------------------------------------------------------------------


class ChaosRun:
    """One run: the mesh, the observer, the faults."""

    def __init__(self, settings, say=print, workdir=None):
        self.settings = settings
        self.say = say
        self.workdir = workdir
        self.up_dir = Path(workdir or tempfile.mkdtemp(prefix="nerve-chaos-"))  # the run's files: configs, findings
        self.up = None
        self.observer = None
        self.stopped = set()
        self.webhook = None
        self.result = ChaosResult(settings)

    def status(self):
        return self.observer.session.call("nerve.supervisor.status")

    def resume(self, pid):
        """SIGCONT a process this run stopped."""
        if pid in self.stopped:
            self.stopped.discard(pid)
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    @defer.inlineCallbacks
    def pids(self):
        """{child name: pid} of the running children, from the supervisor's status."""
        status = yield self.status()
        return {child["name"]: child["pid"] for child in status["children"] if child["pid"]}

    @defer.inlineCallbacks
    def memory(self):
        """{"router worker": (pid, MB), "active orchestrator": (pid, MB)} now."""
        pids = yield self.pids()
        readings = {}
        try:
            worker = max(psutil.Process(pids["router"]).children(recursive=True), key=lambda p: p.memory_info().rss)
            readings["router worker"] = (worker.pid, worker.memory_info().rss / 2**20)
        except (KeyError, ValueError, psutil.Error):
            pass
        name = yield _active_orchestrator(self, 0.0)
        try:
            process = psutil.Process(pids[name])
            readings["active orchestrator"] = (process.pid, process.memory_info().rss / 2**20)
        except (KeyError, psutil.Error):
            pass
        return readings

    @defer.inlineCallbacks
    def run(self):
        settings, say, result = self.settings, self.say, self.result
        self.webhook = WebhookReceiver()
        notify = self.up_dir / "notify.toml"
        notify.write_text(NOTIFY_CONFIG.format(url=self.webhook.url))
        self.up = MeshUpProcess(self.up_dir, "--analyzers", str(settings.analyzers), "--compute", "0",
                                "--hosts", str(settings.hosts), "--orchestrators", "2", "--notify", str(notify),
                                env={"NERVE_WINDOW": str(settings.window)})
        try:
            yield threads.deferToThread(self.up.wait_ready, 60)
            self.observer = Observer(self.up)
            yield self.observer.start()
            yield self._with_router(lambda: call_until(self.observer.session, "nerve.stats",
                                                       lambda stats: stats.get("analysed", 0) >= settings.hosts),
                                    timeout=60)
            say(f"mesh up on port {self.up.port} (logs: {self.up.runtime}/{self.up.port}/logs); "
                f"warm-up {settings.warmup:g} s")
            yield sleep(settings.warmup)
            start = yield self.memory()
            result.memory = {name: {"start": reading} for name, reading in start.items()}
            for name in ("router worker", "active orchestrator"):
                result.memory.setdefault(name, {})
            yield self._faults()
            end = yield self._with_router(self.memory)
            for name, reading in (end or {}).items():
                result.memory.setdefault(name, {})["end"] = reading
            yield self._check_counts()
        except Exception as problem:
            result.errors.append(f"the run stopped: {problem!r:.300}")
        finally:
            for pid in list(self.stopped):
                self.resume(pid)
            if self.observer is not None:
                yield self.observer.stop()
            if self.up is not None:
                code = yield threads.deferToThread(self.up.stop)
                if code not in (0, None):
                    result.errors.append(f"nerve up exited {code} on SIGTERM (see {self.up.output_path})")
            if self.webhook is not None:
                yield self.webhook.down()
        self._recoveries()
        return result

    @defer.inlineCallbacks
    def _with_router(self, action, timeout=30.0):
        """action() once the observer is joined (the router may be coming back), retried for up to timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.observer.connected:
                    value = yield action()
                    return value
            except Exception:
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise AssertionError(f"the mesh did not answer for {timeout:g} s")
            yield sleep(0.2)

    @defer.inlineCallbacks
    def _faults(self):
        settings, say, result = self.settings, self.say, self.result
        began = time.time()
        for offset, kind, pick in settings.schedule():
            yield sleep(max(0.0, began + offset - time.time()))
            if not self.up.running():
                result.errors.append(f"nerve up exited (code {self.up.process.returncode}) before {offset:.0f} s")
                break
            fault_kind = FAULT_KINDS[kind]
            fault = Fault(at=time.time(), offset=offset, kind=kind, target=None, pid=None, bound=fault_kind.bound)
            try:
                name = yield self._with_router(lambda: fault_kind.target(self, pick), timeout=5)
                pids = yield self._with_router(self.pids, timeout=5)
                fault.target, fault.pid = name, pids.get(name)
                if fault.pid is None:
                    fault.problem = f"no running target ({name})"
                else:
                    fault.at = time.time()
                    fault_kind.inject(self, fault.pid)
            except Exception as problem:
                fault.problem = f"could not inject: {problem!r:.200}"
            result.faults.append(fault)
            say(f"  {offset:6.1f} s  {kind:<18} {fault.target or '-'} (pid {fault.pid}){'  ' + fault.problem if fault.problem else ''}")
        yield sleep(max(0.0, began + settings.seconds - time.time()))
        result.phase_seconds = time.time() - began
        for fault, after in zip(result.faults, result.faults[1:] + [None]):
            fault.until = after.at if after else began + settings.seconds

    @defer.inlineCallbacks
    def _check_counts(self):
        """The last seq the active orchestrator received of every host, analysed without a hole from the first the
        observer saw; alerts; the supervisor's children."""
        settings, result, observer = self.settings, self.result, self.observer
        snapshot = yield self._with_router(lambda: observer.session.call("nerve.snapshot"))
        last = {host_id: entry["seq"] for host_id, entry in snapshot["hosts"].items() if entry.get("seq", -1) >= 1}
        deadline = time.monotonic() + settings.catch_up
        while time.monotonic() < deadline:
            behind = [host_id for host_id, seq in last.items() if (observer.last_covered(host_id) or 0) < seq]
            if not behind:
                break
            yield sleep(0.25)
        for host_id, seq in last.items():
            coverage = observer.coverage.get(host_id)
            if coverage is None or not coverage.runs:
                result.lost += seq
                result.lost_examples.append((host_id, 1, seq))
                continue
            result.hosts_checked += 1
            result.published += seq - coverage.runs[0][0] + 1
            covered = sum(min(run[1], seq) - run[0] + 1 for run in coverage.runs if run[0] <= seq)
            result.analysed += covered - min(coverage.missing, covered)
            result.lost += coverage.missing
            if coverage.missing:
                result.lost_examples.append((host_id, "inside calls", coverage.missing))
            for first, until, observed in coverage.holes(seq, observer.epoch):
                if observed:
                    result.lost += until - first + 1
                    result.lost_examples.append((host_id, first, until))
                else:
                    result.unobserved += until - first + 1
        yield self._check_notifications(time.monotonic() + settings.catch_up)
        yield self._check_recorded()
        result.reanalysed = observer.reanalysed
        result.alerts = sum(observer.alerts.values())
        result.duplicate_alerts = sum(count - 1 for count in observer.alerts.values())
        result.duplicate_examples = observer.duplicates[:10]
        result.observer_reconnects = observer.reconnects
        latencies = numpy.frombuffer(observer.latencies, dtype=float)
        result.samples_late = (len(latencies), int((latencies > 1.0).sum()), int((latencies > 5.0).sum()))
        status = yield self._with_router(self.status)
        result.restarts = {child["name"]: child["restarts"] for child in status["children"]}
        result.states = {child["name"]: child["state"] for child in status["children"]}
        stats = yield self._with_router(lambda: observer.session.call("nerve.stats"))
        result.orchestrator_stats = {key: stats.get(key, 0) for key in ("takeovers", "retries", "gaps", "duplicates",
                                                                       "received", "analysed")}

    @defer.inlineCallbacks
    def _check_notifications(self, deadline):
        """Every firing and resolved record the observer saw before now reached the webhook (waiting until deadline
        for the last ones to be sent); no de-duplication key twice."""
        records, result = self.observer.records, self.result
        cutoff = time.time()  # the mesh runs on: changes seen from now on may still be in their group_wait

        def missing():
            delivered = {(alert.get("id"), alert.get("status")) for alert in self.webhook.alerts()}
            return [(alert_id, status) for alert_id, statuses in records.items()
                    for status, seen in statuses.items() if seen < cutoff and (alert_id, status) not in delivered]

        while missing() and time.monotonic() < deadline:
            yield sleep(0.25)
        keys = Counter(self.webhook.keys())
        result.notifications = sum(keys.values())
        result.notified_alerts = sum(1 for statuses in records.values() if statuses.get("firing", cutoff) < cutoff)
        result.unnotified = missing()
        result.duplicate_notifications = [key for key, count in keys.items() if count > 1]
        if result.unnotified or result.duplicate_notifications:
            # What the observer saw of those alerts and what the webhook got, for whoever reads the failure.
            wrong = {alert_id for alert_id, _ in result.unnotified} | {key.split("|")[0] for key in
                                                                     result.duplicate_notifications}
            found = {"records seen (status: epoch s)": {alert_id: records[alert_id] for alert_id in wrong},
                     "delivered (epoch s)": [[at + time.time() - time.monotonic(), alert]
                                             for at, _, body in self.webhook.messages
                                   for alert in (body or {}).get("alerts", []) if alert.get("id") in wrong],
                     "faults": [[fault.at, fault.kind, fault.target] for fault in result.faults]}
            (self.up_dir / "notifications.json").write_text(json.dumps(found, indent=1))
            self.say(f"notifications missing or twice: see {self.up_dir / 'notifications.json'}")

    @defer.inlineCallbacks
    def _check_recorded(self):
        """Per host, one point in the recorder's 1 s tier for every seq from the first to the last the observer saw
        handed to it (nerve.samples), counted between their exact ts."""
        result, session = self.result, self.observer.session
        spans = [(host_id, first, last) for host_id, (first, last) in self.observer.handed.items() if last]
        yield sleep(2.0)  # the recorder commits once a second: the last second handed over is being written

        @defer.inlineCallbacks
        def counted(host_id, first, last):
            answer = yield session.call(RANGE_URI, host_id, first[1] - 1, last[1] + 1, step=1)
            stamps = [ts for ts in answer["ts"] if first[1] - TS_TOLERANCE <= ts <= last[1] + TS_TOLERANCE]
            # Where the recorder has a hole (for whoever reads a failure): the first gap of more than 1.5 intervals.
            hole = next(((a, b) for a, b in zip(stamps, stamps[1:]) if b - a > 1.5 * self.settings.interval), None)
            return host_id, hole, last[0] - first[0] + 1, len(stamps)

        for start in range(0, len(spans), 50):  # 50 queries in flight at a time
            chunk = spans[start:start + 50]
            counts = yield self._with_router(
                lambda: defer.gatherResults([counted(*span) for span in chunk], consumeErrors=True))
            for host_id, hole, expected, recorded in counts:
                result.recorded_checked += expected
                if recorded < expected:
                    result.unrecorded += expected - recorded
                    result.unrecorded_examples.append((host_id, expected, recorded, hole))

    def _recoveries(self):
        """Per fault: when the rolling 1 s p99 went under the limit for good (until the next fault), and its peak."""
        if not self.observer or not len(self.observer.arrivals):
            return
        arrivals = numpy.frombuffer(self.observer.arrivals, dtype=float)
        latencies = numpy.frombuffer(self.observer.latencies, dtype=float)
        order = numpy.argsort(arrivals, kind="stable")
        arrivals, latencies = arrivals[order], latencies[order]
        freshness = [(numpy.frombuffer(times, dtype=float), numpy.frombuffer(newest, dtype=float))
                     for times, newest in self.observer.freshness.values()]
        for fault in self.result.faults:
            if fault.problem:
                continue
            starts = numpy.arange(fault.at, fault.until - WINDOW + 1e-9, STEP)
            overdue = overdue_samples(freshness, starts + WINDOW, self.settings.interval, self.settings.p99_limit)
            p99s = [window_p99(arrivals, latencies, start, late) for start, late in zip(starts, overdue)]
            good = [p99 < self.settings.p99_limit for p99 in p99s]
            if not good or not good[-1]:
                fault.recovery = None
            else:
                first_good = len(good)
                while first_good > 0 and good[first_good - 1]:
                    first_good -= 1
                fault.recovery = round(first_good * STEP, 1)
            finite = [p99 for p99 in p99s if p99 != float("inf")]
            fault.peak_p99 = max(finite) if finite else float("inf")


def overdue_samples(freshness, ends, interval, limit):
    """Per window end, the ages of the samples analysis left behind: a host whose newest analysed sample is older
    than end - interval - limit has a sample (the next one, measured interval later) still waiting after more than
    limit; it counts with that age. Hosts not analysed before are not counted. A list of arrays, one per end."""
    late = [[] for _ in ends]
    for times, newest in freshness:
        index = numpy.searchsorted(times, ends, side="right") - 1
        seen = index >= 0
        ages = numpy.where(seen, ends - newest[numpy.maximum(index, 0)] - interval, -numpy.inf)
        for position in numpy.nonzero(ages >= limit)[0]:
            late[position].append(ages[position])
    return [numpy.array(ages) for ages in late]


def window_p99(arrivals, latencies, start, overdue=()):
    """Nearest-rank p99 of the latencies that arrived in [start, start + 1 s) and the ages of the samples overdue at
    its end (inf when there is neither)."""
    low, high = numpy.searchsorted(arrivals, [start, start + WINDOW])
    values = numpy.concatenate([latencies[low:high], overdue]) if len(overdue) else latencies[low:high]
    if not len(values):
        return float("inf")
    rank = min(len(values) - 1, int(0.99 * len(values)))
    return float(numpy.partition(values, rank)[rank])


def run_chaos(settings, say=print, workdir=None):
    """A Deferred of the ChaosResult of one run (the mesh is stopped before it fires)."""
    return ChaosRun(settings, say, workdir).run()


def report(result):
    """The lines a run prints: a row per fault, the totals, and `summary: pass` or `summary: fail: <why>` last."""
    settings = result.settings
    lines = [f"{'time s':>7}  {'kind':<18} {'target':<15} {'recovery s':>10} {'bound s':>7} {'peak p99 ms':>11}  ok"]
    for fault in result.faults:
        recovery = "never" if fault.recovery is None else f"{fault.recovery:.1f}"
        peak = "-" if fault.peak_p99 != fault.peak_p99 else ("no data" if fault.peak_p99 == float("inf")
                                                             else f"{fault.peak_p99 * 1000:,.0f}")
        lines.append(f"{fault.offset:>7.1f}  {fault.kind:<18} {fault.target or '-':<15} {recovery:>10} "
                     f"{fault.bound:>7g} {peak:>11}  {'yes' if fault.ok else 'NO' + (': ' + fault.problem if fault.problem else '')}")
    kinds = {}
    for fault in result.faults:
        kinds.setdefault(fault.kind, []).append(fault)
    lines.append("kinds: " + "; ".join(f"{kind} = {FAULT_KINDS[kind].describe}" for kind in kinds))
    lines.append(f"faults: {len(result.faults)} in {result.phase_seconds:.0f} s ("
                 + ", ".join(f"{kind} {sum(f.ok for f in faults)}/{len(faults)} ok" for kind, faults in kinds.items())
                 + f"); {settings.hosts} hosts at 1 Hz, seed {settings.seed}, orchestrator window {settings.window:g} s")
    lines.append(f"published (host, seq) checked: {result.published:,} over {result.hosts_checked} hosts; analysed: "
                 f"{result.analysed:,}; lost: {result.lost}; unobserved: {result.unobserved}; analysed again: "
                 f"{result.reanalysed} (observer reconnects: {result.observer_reconnects})")
    total, over_1, over_5 = result.samples_late
    lines.append(f"samples analysed (from the start): {total:,}, of them later than 1 s: {over_1:,}, later than 5 s: "
                 f"{over_5:,}")
    lines.append(f"alerts: {result.alerts:,}; duplicate alerts (host, metric, seq): {result.duplicate_alerts}")
    lines.append(f"recorded: {result.recorded_checked:,} (host, seq) handed to the recorder checked in its 1 s tier; "
                 f"missing: {result.unrecorded:,}")
    lines.append(f"notifications: {result.notifications:,} alerts delivered to the webhook for {result.notified_alerts:,} "
                 f"alert records; never delivered: {len(result.unnotified)}; delivered twice: "
                 f"{len(result.duplicate_notifications)}")
    for name, reading in result.memory.items():
        start, end = reading.get("start"), reading.get("end")
        if start and end:
            lines.append(f"memory, {name}: {start[1]:.0f} MB (pid {start[0]}) after the warm-up, {end[1]:.0f} MB "
                         f"(pid {end[0]}) at the end: {end[1] / start[1] - 1:+.0%} (limit +{settings.memory_margin:.0%})")
        else:
            lines.append(f"memory, {name}: start {start}, end {end}")
    lines.append("restarts by the supervisor: " + ", ".join(f"{name} {count}" for name, count in result.restarts.items()))
    if result.orchestrator_stats:
        lines.append("active orchestrator at the end (since its start): "
                     + ", ".join(f"{key} {value}" for key, value in result.orchestrator_stats.items()))
    failures = result.failures()
    lines.append("summary: pass" if not failures else "summary: fail: " + "; ".join(failures))
    return lines
