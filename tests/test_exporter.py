"""The exporter with plain calls: names and units from the schema, labels, levels, staleness, nerve.stats; its command
line's errors."""

import math
import os
import socket
import subprocess
import sys

import pytest
from autobahn.wamp.exception import ApplicationError
from prometheus_client import CollectorRegistry, generate_latest
from twisted.internet import defer

from components.export.collector import SERIES, series_specs
from components.export.exporter import Exporter, ExporterConfig
from components.mesh.config import MeshConfig
from components.mesh.errors import ConfigError, InvalidArgument
from components.testing import FakeMesh
from components.testing.prometheus import series_of, series_value as value

START = 1_800_000_000.0


def samples_event(hosts, ts=START):
    """A nerve.samples event as the orchestrator publishes it (one chunk)."""
    return {"ts": ts, "orchestrator": "orchestrator", "chunk": 0, "chunks": 1, "hosts": hosts}


def host_entry(stamps, metrics, level=None, levels=None, anomaly=None, hostname=None):
    """One host's entry: measurement times, metric columns aligned with them, and its latest analysis."""
    return {"hostname": hostname, "run": "r1", "seq": list(range(1, len(stamps) + 1)), "ts": stamps,
            "metrics": metrics, "level": level, "levels": levels or {}, "anomaly": anomaly or {}}


STATS = {"received": 1200, "analysed": 1180, "calls": 40, "retries": 2, "backpressure": 1, "duplicates": 0, "gaps": 3,
         "alerts": 7, "hosts": 20, "backlog": 20, "in_flight": 1, "capacity": 15.5, "lag_seconds": 0.25, "active": True,
         "watched_hosts": 0, "dropped": {"nerve.measure.x": 4}, "handler_errors": {},
         "gc": {"count": 12, "seconds": 0.05, "max_seconds": 0.01, "frozen": 1000},
         "analysis_latency": {"p50_ms": 40.0, "p99_ms": 90.0, "samples": 100}, "arrival_latency": None,
         "analysis_latency_histogram": {"edges_ms": [25, 50, 100], "counts": [10, 60, 25, 5]}}


@pytest.fixture
def exporter_and_fake():
    """An Exporter bound to a FakeMesh, timed by the fake's clock (set to START); nerve.stats answers STATS."""
    config = ExporterConfig(mesh=MeshConfig(role="exporter"), stats_every=5.0)
    fake = FakeMesh(config)
    fake.clock.advance(START)
    exporter = Exporter(config, fake.mesh, clock=fake.clock.seconds)
    fake.answer("nerve.stats", lambda: STATS)
    fake.bind(exporter)
    return exporter, fake


def scrape(exporter):
    """{(sample name, frozenset of labels): value} of one scrape, read back through prometheus_client's own parser."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(exporter.collector)
    return series_of(generate_latest(registry).decode())


def test_each_schema_family_is_named_in_base_units_from_its_unit():
    assert SERIES["cpu"].name == "nerve_cpu_ratio" and SERIES["cpu"].factor == 0.01
    assert SERIES["disk_used"].name == "nerve_disk_used_ratio" and SERIES["disk_used"].instance_label == "mount"
    assert SERIES["cpu_core"].instance_label == "core"
    assert SERIES["net_recv"].name == "nerve_net_recv_bytes_per_second" and SERIES["net_recv"].factor == 1.0
    assert SERIES["load1"].name == "nerve_load1" and SERIES["procs"].name == "nerve_procs"
    with pytest.raises(ValueError, match="'uptime': unit 's' has no Prometheus conversion"):
        series_specs({"uptime": {"label": "Uptime", "unit": "s"}})


def test_a_samples_event_becomes_one_gauge_per_family_with_host_and_instance_labels(exporter_and_fake):
    exporter, fake = exporter_and_fake
    fake.deliver("nerve.samples", samples_event({"web-01": host_entry(
        [START - 1, START], {"cpu": [40.0, 42.0], "cpu_core.3": [10.0, None], "disk_used.root": [55.0, 55.5],
                             "net_recv": [100.0, 2048.0], "load1": [0.5, 0.75], "procs": [300, 301]},
        level="MEDIUM", levels={"cpu": "MEDIUM", "mem": "LOW"}, anomaly={"cpu": 1.5, "cpu_core.3": -0.25},
        hostname="web-01.example.com")}))
    scraped = scrape(exporter)
    assert value(scraped, "nerve_cpu_ratio", host="web-01") == pytest.approx(0.42)
    assert value(scraped, "nerve_cpu_core_ratio", host="web-01", core="3") == pytest.approx(0.10)  # the latest non-null
    assert value(scraped, "nerve_disk_used_ratio", host="web-01", mount="root") == pytest.approx(0.555)
    assert value(scraped, "nerve_net_recv_bytes_per_second", host="web-01") == 2048.0
    assert value(scraped, "nerve_load1", host="web-01") == 0.75 and value(scraped, "nerve_procs", host="web-01") == 301
    assert value(scraped, "nerve_host_level", host="web-01") == 1
    assert value(scraped, "nerve_level", host="web-01", metric="cpu") == 1
    assert value(scraped, "nerve_level", host="web-01", metric="mem") == 0
    assert value(scraped, "nerve_anomaly_score", host="web-01", metric="cpu_core.3") == -0.25
    assert value(scraped, "nerve_host_info", host="web-01", hostname="web-01.example.com") == 1
    assert value(scraped, "nerve_last_measurement_timestamp_seconds", host="web-01") == START
    assert value(scraped, "nerve_exporter_hosts") == 1 and value(scraped, "nerve_exporter_samples_events_total") == 1
    assert fake.mesh.dropped == {} and fake.mesh.errors == {}


def test_the_next_event_replaces_a_hosts_values_and_leaves_the_others(exporter_and_fake):
    exporter, fake = exporter_and_fake
    fake.deliver("nerve.samples", samples_event({"a": host_entry([START], {"cpu": [10.0]}, level="LOW"),
                                                 "b": host_entry([START], {"cpu": [20.0]}, level="HIGH")}))
    fake.clock.advance(1)
    fake.deliver("nerve.samples", samples_event({"a": host_entry([START + 1], {"cpu": [30.0]}, level=None)}))
    scraped = scrape(exporter)
    assert value(scraped, "nerve_cpu_ratio", host="a") == pytest.approx(0.30)
    assert value(scraped, "nerve_host_level", host="a") is None  # no level now: no series, not a stale one
    assert value(scraped, "nerve_cpu_ratio", host="b") == pytest.approx(0.20)
    assert value(scraped, "nerve_host_level", host="b") == 2


def test_a_host_without_measurements_for_3_intervals_drops_out_of_the_exposition(exporter_and_fake):
    exporter, fake = exporter_and_fake
    slow = host_entry([START - 20, START - 10, START], {"cpu": [1.0, 2.0, 3.0]})  # measures every 10 s
    fast = host_entry([START], {"cpu": [5.0]})  # one sample: the default 1 s interval, so the 5 s floor
    fake.deliver("nerve.samples", samples_event({"slow": slow, "fast": fast}))
    fake.advance(4.9)
    assert {"slow", "fast"} == {host for (name, labels), _ in scrape(exporter).items() if name == "nerve_cpu_ratio"
                                for key, host in labels if key == "host"}
    fake.advance(0.2)
    scraped = scrape(exporter)
    assert value(scraped, "nerve_cpu_ratio", host="fast") is None and value(scraped, "nerve_host_info", host="fast",
                                                                            hostname="fast") is None
    assert value(scraped, "nerve_cpu_ratio", host="slow") == pytest.approx(0.03)
    fake.advance(25)
    assert value(scrape(exporter), "nerve_cpu_ratio", host="slow") is None
    assert exporter.collector.hosts == {}  # forgotten too, not only hidden
    fake.deliver("nerve.samples", samples_event({"fast": host_entry([START + 30], {"cpu": [6.0]})}))
    assert value(scrape(exporter), "nerve_cpu_ratio", host="fast") == pytest.approx(0.06)  # back when it reports


@pytest.mark.parametrize("event, problem", [
    ({"hosts": []}, "'hosts' mapping host ids"),
    (samples_event({"Bad Host": host_entry([START], {"cpu": [1.0]})}), "not URI-safe"),
    (samples_event({"h": host_entry([START, START + 1], {"cpu": [1.0]})}), "metric 'cpu' must be a list of 2"),
    (samples_event({"h": host_entry([START], {"cpu": ["high"]})}), "not a finite number"),
    (samples_event({"h": host_entry([START], {"cpu": [1.0]}, level="SEVERE")}), "'level' must be one of"),
    (samples_event({"h": host_entry([START], {"cpu": [1.0]}, levels={"cpu": 2})}), "'levels' must map"),
    (samples_event({"h": dict(host_entry([START], {"cpu": [1.0]}), ts=[])}), "'ts' must be a non-empty list"),
    (samples_event({"h": dict(host_entry([START], {"cpu": [1.0]}), ts=[True])}), "'ts' must be a non-empty list"),
    # Names become label values and level names index a table: what is not a string is refused, not stored.
    (samples_event({"h": host_entry([START], {7: [1.0]})}), "'metrics' must map metric names"),
    (samples_event({"h": host_entry([START], {"cpu": [1.0]}, level=["HIGH"])}), "'level' must be one of"),
    (samples_event({"h": host_entry([START], {"cpu": [1.0]}, levels={"cpu": ["HIGH"]})}), "'levels' must map"),
    (samples_event({"h": host_entry([START], {"cpu": [1.0]}, anomaly={5: 1.0})}), "'anomaly' must map metric names"),
    (samples_event({"h": host_entry([START], {"cpu": [1.0]}, anomaly={"cpu": math.inf})}), "'anomaly' must map"),
])
def test_a_malformed_event_is_counted_and_dropped_whole(exporter_and_fake, event, problem, caplog):
    exporter, fake = exporter_and_fake
    fake.deliver("nerve.samples", samples_event({"good": host_entry([START], {"cpu": [50.0]})}))
    before = scrape(exporter)
    event = dict(event)
    if "hosts" in event and isinstance(event["hosts"], dict):
        event["hosts"] = dict(event["hosts"], good=host_entry([START], {"cpu": [99.0]}))  # never half taken
    fake.deliver("nerve.samples", event)
    assert fake.mesh.dropped == {"nerve.samples": 1} and fake.mesh.errors == {}
    assert scrape(exporter) == before
    with pytest.raises(InvalidArgument, match=problem):
        exporter.collector.ingest(event)


def test_orchestrator_counters_come_from_nerve_stats_every_few_seconds_whatever_the_scrapes(exporter_and_fake):
    exporter, fake = exporter_and_fake
    for _ in range(20):
        scraped = scrape(exporter)
    assert [call.uri for call in fake.calls_made] == ["nerve.stats"]  # asked once at join, not once per scrape
    assert value(scraped, "nerve_orchestrator_up") == 1
    assert value(scraped, "nerve_orchestrator_received_total") == 1200
    assert value(scraped, "nerve_orchestrator_lag_seconds") == 0.25 and value(scraped, "nerve_orchestrator_active") == 1
    assert value(scraped, "nerve_orchestrator_dropped_events_total", source="nerve.measure.x") == 4
    assert value(scraped, "nerve_orchestrator_gc_seconds_total") == 0.05
    assert value(scraped, "nerve_orchestrator_latency_seconds", measure="analysis", quantile="0.99") == 0.09
    assert value(scraped, "nerve_orchestrator_analysis_latency_seconds_bucket", le="0.05") == 70
    assert value(scraped, "nerve_orchestrator_analysis_latency_seconds_bucket", le="+Inf") == 100
    fake.advance(5)
    assert len(fake.calls_made) == 2
    fake.answer("nerve.stats", lambda: defer.fail(ApplicationError("wamp.error.no_such_procedure", "no orchestrator")))
    fake.advance(16)  # three answers missed: the orchestrator's numbers are no longer shown as current
    scraped = scrape(exporter)
    assert value(scraped, "nerve_orchestrator_up") == 0 and value(scraped, "nerve_orchestrator_received_total") is None


def test_bad_settings_are_refused_naming_the_field():
    mesh = MeshConfig(role="exporter")
    with pytest.raises(ConfigError, match="port must be from 0"):
        ExporterConfig(mesh=mesh, port=70000)
    with pytest.raises(ConfigError, match="listen address 'example.com' must be an IP address"):
        ExporterConfig(mesh=mesh, listen="example.com")
    with pytest.raises(ConfigError, match="stats every must be from 1 to 300"):
        ExporterConfig(mesh=mesh, stats_every=0.1)


def nerve(*args):
    """Run a `nerve` command to completion; the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "components", *args], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, NERVE_ROUTER="rs://127.0.0.1:1"))


def test_a_port_in_use_stops_the_exporter_at_start_saying_which():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = nerve("exporter", "--port", str(port))
    assert result.returncode == 1
    assert f"cannot serve /metrics on 127.0.0.1 port {port}" in result.stderr and "pass another --port" in result.stderr


def test_bad_exporter_flags_are_usage_errors_and_nerve_up_offers_the_exporter_port():
    result = nerve("exporter", "--listen", "example.com")
    assert result.returncode == 2 and "Usage:" in result.stderr and "must be an IP address" in result.stderr
    shown = nerve("up", "--help").stdout
    assert "--exporter-port" in shown and "0: no exporter" in shown
