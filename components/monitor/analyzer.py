"""The analyzer: a stateless shared callee of nerve.analyze; start as many as you like."""

import threading
from dataclasses import dataclass, field

from twisted.internet import reactor, threads
from twisted.logger import Logger

from components.monitor.analysis import DEFAULT_THRESHOLDS, AnalysisParams, analyze_batch, pack_results, unpack_batch
from components.mesh.config import MeshConfig
from components.mesh.decorators import every, procedure
from components.mesh.errors import ConfigError, InvalidArgument

log = Logger(namespace="nerve.analyzer")
MAX_HOSTS_PER_CALL = 5000


@dataclass(frozen=True)
class AnalyzerConfig:
    """Analyzer settings: concurrency cap, thresholds per metric family, statistics time constants."""

    mesh: MeshConfig
    concurrency: int = 1
    thresholds: dict = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    params: AnalysisParams = AnalysisParams()
    extra_work_ms: float = 0.0

    def __post_init__(self):
        if not 1 <= self.concurrency <= 64:
            raise ConfigError(f"concurrency must be between 1 and 64, got {self.concurrency}")
        if self.extra_work_ms < 0:
            raise ConfigError(f"extra work must be >= 0 ms, got {self.extra_work_ms}")


def burn_cpu(milliseconds):
    """Spin for the given CPU time: a stand-in for a heavier analysis in benchmarks and tests."""
    import time

    deadline = time.thread_time() + milliseconds / 1000
    while time.thread_time() < deadline:
        pass


class Analyzer:
    """Runs analyze_batch for each call in a worker thread and publishes its own load every second."""

    def __init__(self, config, mesh):
        self.config = config
        self.mesh = mesh
        self.served = 0
        self.hosts_analyzed = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        # Calls run in threads so the router's concurrency cap, not the reactor, is what keeps them apart.
        reactor.suggestThreadPoolSize(max(config.concurrency, 2))

    @procedure("nerve.analyze", invoke="roundrobin", concurrency=lambda config: config.concurrency)
    def analyze(self, hosts, compact=False):
        """Analyse a batch of hosts' new samples against their states; returns states and results (compact: wire form).

        `hosts` may come packed (analysis.pack_batch); the answer's hosts are then packed too, states sealed.
        """
        if not isinstance(hosts, (list, bytes)):
            raise InvalidArgument(f"hosts must be a list of host entries or that list packed as MessagePack bytes, "
                                  f"got {type(hosts).__name__}")
        if not isinstance(compact, bool):
            raise InvalidArgument(f"compact must be true or false, got {compact!r:.40}")
        return threads.deferToThread(self._analyze, hosts, compact)

    def _analyze(self, hosts, compact):
        packed = isinstance(hosts, bytes)
        if packed:
            hosts = unpack_batch(hosts)
        if len(hosts) > MAX_HOSTS_PER_CALL:
            raise InvalidArgument(f"hosts must be at most {MAX_HOSTS_PER_CALL} host entries, got {len(hosts)}")
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            overlapping = self.in_flight > self.config.concurrency
        try:
            if overlapping:
                log.error("{n} calls in flight above the concurrency cap {cap}", n=self.in_flight, cap=self.config.concurrency)
            if self.config.extra_work_ms:
                burn_cpu(self.config.extra_work_ms)
            results = analyze_batch(hosts, self.config.thresholds, self.config.params, compact=compact)
        finally:
            with self.lock:
                self.in_flight -= 1
        with self.lock:
            self.served += 1
            self.hosts_analyzed += len(results)
        return {"analyzer": self.mesh.config.mesh.authid, "hosts": pack_results(results) if packed else results}

    @every(1.0)
    def publish_load(self):
        """Publish calls served and in flight against the cap on nerve.analyzer.<authid>."""
        authid = self.mesh.config.mesh.authid
        self.mesh.publish(f"nerve.analyzer.{authid}", {
            "instance": authid, "served": self.served, "hosts_analyzed": self.hosts_analyzed,
            "in_flight": self.in_flight, "max_in_flight": self.max_in_flight, "concurrency": self.config.concurrency})
