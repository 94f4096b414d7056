"""The tracker: measures this machine (or simulates many) and publishes nerve.measure.<host_id> every interval."""

import math
import os
import socket
import time
import uuid
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass
from typing import Optional

import psutil
from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer, reactor, task
from twisted.logger import Logger

from components.mesh.config import MeshConfig, uri_safe
from components.mesh.decorators import every, on_join
from components.mesh.errors import ConfigError
from components.monitor.measure import HOST_ID_PATTERN, MAX_INTERVAL, MEASURE_TOPIC_PREFIX, MIN_INTERVAL, measure_topic

log = Logger(namespace="nerve.tracker")
MAX_UNACKED = 2000
# One publish in a window asks the router to acknowledge it; that acknowledgement confirms the whole window
# (a session's messages are handled in order), so the router sends one PUBLISHED per window, not per measurement.
ACK_EVERY = 200  # publishes
ACK_SECONDS = 5.0  # of measurement time: a tracker of one host at 1 Hz asks every 5th publish
SPREAD_SLOTS = 20  # simulated hosts measure in this many groups per interval, as independent machines would
REFUSALS = ("wamp.error.not_authorized", "wamp.error.invalid_uri", "wamp.error.invalid_argument")


@dataclass(frozen=True)
class TrackerConfig:
    """Tracker settings: interval, identity, and how many hosts to simulate (0 = measure this machine)."""

    mesh: MeshConfig
    interval: float = 1.0
    host_id: Optional[str] = None
    hosts: int = 0
    seed: int = 0
    buffer_seconds: float = 600.0
    aligned: bool = False

    @property
    def slots(self):
        """Groups per interval: simulated hosts spread over the interval, unless aligned (a worst-case burst)."""
        return 1 if self.aligned or not self.hosts else min(self.hosts, SPREAD_SLOTS)

    def __post_init__(self):
        if self.buffer_seconds < 0:
            raise ConfigError(f"buffer seconds must be >= 0, got {self.buffer_seconds}")
        if not MIN_INTERVAL <= self.interval <= MAX_INTERVAL:
            raise ConfigError(f"interval must be between {MIN_INTERVAL} and {MAX_INTERVAL:.0f} seconds, got {self.interval}")
        if self.hosts < 0 or self.hosts > 100_000:
            raise ConfigError(f"hosts must be between 0 and 100000, got {self.hosts}")
        if self.host_id is not None and not HOST_ID_PATTERN.match(self.host_id):
            raise ConfigError(f"host id {self.host_id!r} must be 1-64 of a-z 0-9 _ -")


def local_host_id():
    """This machine's hostname made URI-safe."""
    return uri_safe(socket.gethostname())


def mount_name(mountpoint):
    """A mount point as a metric instance name: '/' -> 'root', '/var/lib' -> 'var_lib'."""
    return "root" if mountpoint == "/" else uri_safe(mountpoint.strip("/").replace("/", "_")).replace("-", "_")


class SystemSampler:
    """Reads this machine's metrics with psutil; rates come from counter deltas between samples."""

    def __init__(self):
        self.cores = psutil.cpu_count() or 1
        self.mounts = {mount_name(part.mountpoint): part.mountpoint for part in psutil.disk_partitions(all=False)}
        psutil.cpu_percent(percpu=True)  # primes psutil's CPU deltas so the first sample is real
        self.last_counters = self._counters()

    @staticmethod
    def _counters():
        disk, net = psutil.disk_io_counters(), psutil.net_io_counters()
        return (time.monotonic(),
                disk.read_bytes if disk else 0, disk.write_bytes if disk else 0,
                net.bytes_recv if net else 0, net.bytes_sent if net else 0)

    def sample(self):
        """One reading of every metric in the schema, as {name: value}."""
        per_core = psutil.cpu_percent(percpu=True)
        metrics = {"cpu": round(sum(per_core) / len(per_core), 2)}
        metrics.update({f"cpu_core.{index}": value for index, value in enumerate(per_core)})
        metrics["load1"], metrics["load5"], metrics["load15"] = (round(value, 3) for value in os.getloadavg())
        metrics["mem"] = psutil.virtual_memory().percent
        metrics["swap"] = psutil.swap_memory().percent
        for name, mountpoint in self.mounts.items():
            try:
                metrics[f"disk_used.{name}"] = psutil.disk_usage(mountpoint).percent
            except OSError:  # a mount that went away (unplugged disk) is skipped, not fatal
                continue
        counters = self._counters()
        elapsed = max(counters[0] - self.last_counters[0], 1e-6)
        for name, now, before in zip(("disk_read", "disk_write", "net_recv", "net_sent"), counters[1:], self.last_counters[1:]):
            metrics[name] = round(max(now - before, 0) / elapsed, 1)
        self.last_counters = counters
        metrics["procs"] = len(psutil.pids())
        return metrics


class SimulatedHosts:
    """Plausible synthetic series for many hosts: a base load, a slow wave, noise and occasional bursts.

    A simulator stands in for thousands of machines on the one it runs on, so a group of hosts is
    drawn at once with NumPy (imported here, not by a real tracker, which never needs it).
    """

    def __init__(self, count, seed=0, cores=4):
        import numpy

        self.numpy = numpy
        self.rng = numpy.random.default_rng(seed)
        self.cores = cores
        self.host_ids = [f"sim-{index:04d}" for index in range(count)]
        uniform = self.rng.uniform
        self.base, self.amplitude = uniform(5, 55, count), uniform(2, 20, count)
        self.period, self.phase = uniform(60, 600, count), uniform(0, 2 * math.pi, count)
        self.mem, self.disk = uniform(25, 75, count), uniform(30, 85, count)
        self.procs = self.rng.integers(90, 401, count)
        self.burst_until = numpy.zeros(count)
        self.names = (["cpu", "load1", "mem", "swap", "disk_used.root", "disk_read", "disk_write", "net_recv", "net_sent",
                       "procs"] + [f"cpu_core.{index}" for index in range(cores)])

    def sample(self, host_index, now):
        """One reading for the host at index, as {name: value}."""
        return self.sample_many(slice(host_index, host_index + 1), now)[0]

    def sample_many(self, hosts, now):
        """One reading for each host selected by `hosts` (a slice or index array), as a list of {name: value}."""
        numpy, rng = self.numpy, self.rng
        count = len(self.base[hosts])
        burst_until = self.burst_until[hosts]
        starting = (burst_until < now) & (rng.random(count) < 0.002)
        burst_until = numpy.where(starting, now + rng.uniform(5, 30, count), burst_until)
        self.burst_until[hosts] = burst_until
        wave = self.amplitude[hosts] * numpy.sin(2 * math.pi * now / self.period[hosts] + self.phase[hosts])
        calm = self.base[hosts] + wave
        cpu = numpy.clip(numpy.where(burst_until >= now, rng.uniform(80, 99, count), calm) + rng.normal(0, 3, count), 0, 100)
        cores = numpy.clip(cpu[:, None] + rng.normal(0, 8, (count, self.cores)), 0, 100)
        mem = self.mem[hosts] = numpy.clip(self.mem[hosts] + rng.normal(0, 0.2, count), 5, 95)
        columns = [cpu.round(2), (cpu / 100 * self.cores + rng.uniform(0, 0.3, count)).round(3), mem.round(2),
                   (numpy.maximum(mem - 70, 0) / 3).round(2), self.disk[hosts].round(2),
                   rng.lognormal(10, 1.5, count).round(1), rng.lognormal(11, 1.5, count).round(1),
                   rng.lognormal(11, 1.2, count).round(1), rng.lognormal(10.5, 1.2, count).round(1),
                   self.procs[hosts] + rng.integers(-3, 4, count)] + list(cores.round(2).T)
        names = self.names
        return [dict(zip(names, values)) for values in zip(*(column.tolist() for column in columns))]


class Tracker:
    """Publishes one measurement per host per interval, with a per-run sequence number.

    Measurements wait in a bounded buffer (oldest dropped first, counted) while the router
    is away or nobody subscribes to measurements yet, and are replayed in order, with their
    original seq and ts, once an orchestrator listens again. A published measurement is kept
    until the router confirms it: every ACK_EVERY publishes or ACK_SECONDS of measurement time
    one publish asks for an acknowledgement, which confirms it and every publish before it.
    """

    def __init__(self, config, mesh):
        self.config = config
        self.mesh = mesh
        self.run_id = uuid.uuid4().hex[:12]
        self.seq = 0
        self.slot = 0
        self.hostname = socket.gethostname()
        self.fields = {}  # optional measurement fields (MEASURE_OPTIONAL_FIELDS) this tracker sends
        if config.hosts:
            simulated = SimulatedHosts(config.hosts, seed=config.seed)
            self.host_ids = simulated.host_ids
            self.read = lambda now, hosts: simulated.sample_many(hosts, now)
        else:
            sampler = SystemSampler()
            self.host_ids = [config.host_id or local_host_id()]
            self.read = lambda now, hosts: [sampler.sample()]
            self.fields = {"boot_time": float(psutil.boot_time())}  # a change from one run to the next is a reboot
        self.capacity = max(1, math.ceil(config.buffer_seconds / config.interval)) * len(self.host_ids)
        self.buffer = deque()
        self.unacked = OrderedDict()  # (host_id, seq) -> event, published and not yet confirmed, oldest first
        self.since_ask = 0  # publishes since the last one that asked for an acknowledgement
        self.asked_ts = -math.inf  # measurement ts of that publish
        self.listened = False
        self.stats = Counter()

    def measurements(self, now, slot=0):
        """The events of one slot of a round (every host when there is one slot), one per host."""
        if slot == 0:
            self.seq += 1
        ts, interval, hosts = round(now, 3), self.config.interval, slice(slot, None, self.config.slots)
        return [{"host_id": host_id, "hostname": self.hostname, "run": self.run_id, "seq": self.seq, "ts": ts,
                 "interval": interval, "metrics": metrics, **self.fields}
                for host_id, metrics in zip(self.host_ids[hosts], self.read(now, hosts))]

    @every(lambda config: config.interval / config.slots, offline=True)
    def measure_round(self):
        """Measure the next slot's hosts, joined or not, and send what the buffer holds."""
        slot, self.slot = self.slot, (self.slot + 1) % self.config.slots
        self.buffer.extend(self.measurements(time.time(), slot))
        self._trim()
        self.flush()

    def _trim(self):
        overflow = len(self.buffer) - self.capacity
        if overflow > 0:
            for _ in range(overflow):
                self.buffer.popleft()
            if not self.stats["buffer_dropped"]:
                log.warn("buffer full ({capacity} measurements): dropping the oldest", capacity=self.capacity)
            self.stats["buffer_dropped"] += overflow

    def flush(self):
        """Publish buffered measurements in order, keeping each until the router confirms it."""
        while self.buffer and self.listened and self.mesh.connected and len(self.unacked) < MAX_UNACKED:
            event = self.buffer.popleft()
            key = (event["host_id"], event["seq"])
            self.unacked[key] = event
            self.since_ask += 1
            ask = self.since_ask >= ACK_EVERY or event["ts"] - self.asked_ts >= ACK_SECONDS
            sent = self.mesh.publish(measure_topic(event["host_id"]), event, acknowledge=ask)
            if ask:
                self.since_ask, self.asked_ts = 0, event["ts"]
                sent.addCallbacks(self._acknowledged, self._not_acknowledged, callbackArgs=(key,), errbackArgs=(key,))

    def _confirm(self, key):
        """Forget the unconfirmed publishes up to and including `key`; how many."""
        if key not in self.unacked:  # requeued by a rejoin meanwhile
            return 0
        count = 0
        while True:
            first, _ = self.unacked.popitem(last=False)
            count += 1
            if first == key:
                return count

    def _acknowledged(self, _, key):
        self.stats["published"] += self._confirm(key)
        if self.buffer and len(self.unacked) < MAX_UNACKED // 2:
            self.flush()

    def _not_acknowledged(self, failure, key):
        error = failure.value
        if isinstance(error, ApplicationError) and error.error in REFUSALS:
            # The router will never take them (a tracker's publishes share one permission and one schema):
            # retrying would loop forever.
            before = self.stats["refused"]
            self.stats["refused"] += self._confirm(key)
            if any(before < mark <= self.stats["refused"] for mark in (1, 100, 10000)):
                log.error("router refused measurements ({n} so far): {error}", n=self.stats["refused"], error=error)
        # Otherwise the connection went away; the next join puts the unconfirmed events back in the buffer.

    @on_join
    @defer.inlineCallbacks
    def replay_when_heard(self):
        """After each join: requeue what was never confirmed, wait for a measurement subscriber, then flush."""
        if self.unacked:
            self.buffer.extendleft(reversed(list(self.unacked.values())))
            self.unacked.clear()
        self.since_ask, self.asked_ts = 0, -math.inf
        self.listened = False
        waited = 0
        while self.mesh.connected and not self.listened:
            self.listened = yield self._measurements_subscribed()
            if not self.listened:
                if waited == 8:
                    log.info("no orchestrator subscribes to measurements yet; buffering")
                waited += 1
                yield task.deferLater(reactor, 0.25, lambda: None)
        if self.buffer:
            log.info("replaying {n} buffered measurements", n=len(self.buffer))
        self.flush()

    @defer.inlineCallbacks
    def _measurements_subscribed(self):
        subscription = yield self.mesh.call("wamp.subscription.lookup", MEASURE_TOPIC_PREFIX, {"match": "prefix"})
        if subscription is None:
            return False
        count = yield self.mesh.call("wamp.subscription.count_subscribers", subscription)
        return bool(count)
