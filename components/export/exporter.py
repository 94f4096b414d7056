"""`nerve exporter`: serves /metrics in the Prometheus text format from what the orchestrator already publishes.

It subscribes nerve.samples (one event per second per 500 hosts) and asks nerve.stats every few seconds, so a
scrape costs no router message whatever the fleet, only the exporter's own CPU (docs/grafana.md says how much).
"""

import time
from dataclasses import dataclass

from autobahn.wamp.exception import ApplicationError
from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.wsgi import WSGIResource

from components.export import DEFAULT_PORT
from components.export.collector import FleetCollector
from components.mesh.config import MeshConfig
from components.mesh.decorators import every, on
from components.mesh.errors import ConfigError, InvalidArgument
from components.monitor.samples import SAMPLES_TOPIC
from components.node.routerctl import checked_listen

log = Logger(namespace="nerve.exporter")
METRICS_PATH = b"metrics"


@dataclass(frozen=True)
class ExporterConfig:
    """Exporter settings: where /metrics is served, how often nerve.stats is asked, when a host drops out."""

    mesh: MeshConfig
    port: int = DEFAULT_PORT
    listen: str = "127.0.0.1"
    stats_every: float = 5.0
    stale_after: float = 5.0

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be from 0 (any free port) to 65535, got {self.port}")
        object.__setattr__(self, "listen", checked_listen(self.listen))
        if not 1.0 <= self.stats_every <= 300.0:
            raise ConfigError(f"stats every must be from 1 to 300 seconds, got {self.stats_every}")
        if self.stale_after <= 0:
            raise ConfigError(f"stale after must be > 0 seconds, got {self.stale_after}")


class Exporter:
    """Keeps the fleet's latest state from nerve.samples and the orchestrator's nerve.stats for the collector."""

    def __init__(self, config, mesh, clock=time.time):
        self.config = config
        self.mesh = mesh
        # Counters a few scrapes old are fine; three missed answers and the orchestrator's families drop out.
        self.collector = FleetCollector(stale_after=config.stale_after, stats_max_age=3 * config.stats_every, clock=clock)

    @on(SAMPLES_TOPIC)
    def on_samples(self, event):
        """Take the latest values, levels and anomaly scores of the hosts in one nerve.samples event."""
        self.collector.ingest(event)

    @every(lambda config: config.stats_every)
    @defer.inlineCallbacks
    def fetch_stats(self):
        """Ask the active orchestrator for its counters (every few seconds, whatever the scrape rate)."""
        try:
            stats = yield self.mesh.call("nerve.stats", timeout=self.config.stats_every)
            self.collector.set_stats(stats)
        except (ApplicationError, defer.CancelledError, InvalidArgument) as error:
            log.debug("nerve.stats unavailable ({error})", error=error)

    @every(1.0, offline=True)
    def drop_stale(self):
        """Forget hosts nothing arrived from for max(stale_after, 3 intervals): they leave the exposition."""
        self.collector.drop_stale()


def text_format_only(app):
    """The WSGI app answering every scrape in the Prometheus text format, whatever the scraper prefers."""

    def answer(environ, start_response):
        # Prometheus asks for OpenMetrics first; prometheus_client renders it slower than the text format, which
        # Prometheus reads as well, and a large fleet is tens of series per host.
        environ.pop("HTTP_ACCEPT", None)
        return app(environ, start_response)

    return answer


def metrics_site(collector, reactor):
    """A Twisted web site serving the collector (and this process's CPU and memory) at /metrics from the reactor's
    thread pool, as prometheus_client.twisted.MetricsResource does, in the text format and uncompressed."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    # Uncompressed: gzip would add a large share to each scrape's CPU to save bandwidth a LAN does not miss.
    app = text_format_only(make_wsgi_app(registry, disable_compression=True))
    root = Resource()
    root.putChild(METRICS_PATH, WSGIResource(reactor, reactor.getThreadPool(), app))
    site = Site(root)
    site.noisy = False
    site.log = lambda request: None  # one access line per scrape would drown the component's log
    return site


def serve_metrics(exporter, reactor):
    """Listen for scrapes on the configured address and port; returns the URL of /metrics (CannotListenError if the
    port is taken)."""
    config = exporter.config
    listening = reactor.listenTCP(config.port, metrics_site(exporter.collector, reactor), interface=config.listen)
    host = f"[{config.listen}]" if ":" in config.listen else config.listen
    return f"http://{host}:{listening.getHost().port}/{METRICS_PATH.decode()}"
