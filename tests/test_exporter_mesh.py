"""`nerve exporter` against a real router: fed by a real orchestrator's nerve.samples, scraped by a real Prometheus."""

import json
import time
from types import SimpleNamespace

import pytest
import pytest_twisted
from twisted.internet import task

from components.node.routerctl import free_port
from components.testing.live import ComponentProcess, MeshUpProcess, join, wait_until
from components.testing.prometheus import PrometheusProcess, prometheus_binary, scraped_series, series_value
from tests.test_exporter_grafana import DASHBOARD, LABEL_VALUES, expressions

SIMULATED = ["sim-0000", "sim-0001", "sim-0002"]


@pytest.fixture(scope="module")
def exporter(router):
    """One `nerve exporter` process on a free port, asking nerve.stats every second; `url` is its /metrics."""
    port = free_port()
    process = ComponentProcess(router, "exporter", "--port", str(port), "--stats-every", "1")
    process.url = f"http://127.0.0.1:{port}/metrics"
    process.target = f"127.0.0.1:{port}"
    yield process
    process.stop()


def scraped_when(exporter, condition):
    """A predicate for wait_until: the exporter's series when condition(series) holds, else None (also while it starts).

    `exporter` has the `url` of /metrics, and `running()` and `output()` of the process that serves it."""

    def check():
        assert exporter.running(), f"the exporter exited:\n{exporter.output()}"
        series = scraped_series(exporter.url)
        return series if series is not None and condition(series) else None

    return check


@pytest_twisted.inlineCallbacks
def test_the_exporter_serves_a_real_orchestrators_hosts_and_drops_those_that_stop(orchestrator, exporter, start, dashboard):
    start("analyzer", "--authid", "exporter-test-analyzer")
    simulator = start("tracker", "--hosts", str(len(SIMULATED)), "--seed", "3")
    series = yield wait_until(scraped_when(exporter, lambda series: all(
        series_value(series, "nerve_host_level", host=host) is not None for host in SIMULATED)
        and series_value(series, "nerve_orchestrator_up") == 1), timeout=40, interval=0.5,
        message="the simulated hosts with their levels, and the orchestrator's counters, on /metrics")
    # The exported value is one the orchestrator received for the host, in base units (a ratio, not a percentage).
    history = yield dashboard.call("nerve.history", "sim-0001")
    cpu = series_value(series, "nerve_cpu_ratio", host="sim-0001")
    assert any(sample["metrics"]["cpu"] / 100 == pytest.approx(cpu) for sample in history["samples"]), cpu
    assert series_value(series, "nerve_disk_used_ratio", host="sim-0001", mount="root") is not None
    assert series_value(series, "nerve_host_info", host="sim-0001", hostname=history["hostname"]) == 1
    assert series_value(series, "nerve_orchestrator_received_total") > 0
    simulator.stop()
    yield wait_until(scraped_when(exporter, lambda series: not any(
        series_value(series, "nerve_cpu_ratio", host=host) for host in SIMULATED)), timeout=15, interval=0.5,
        message="the stopped simulator's hosts leaving /metrics")


@pytest_twisted.inlineCallbacks
def test_a_real_prometheus_scrapes_the_exporter_and_answers_a_query_with_the_hosts_value(router, orchestrator, exporter,
                                                                                           tmp_path):
    if prometheus_binary() is None:
        pytest.skip("Debian prometheus is not installed (make prometheus)")
    # A publisher of known values, as the orchestrator publishes nerve.samples: every half second, one host.
    publisher = yield join(router.rawsocket_url, "orchestrator", "exporter-test-publisher",
                           router.ticket("orchestrator", "exporter-test-publisher"))

    def publish():
        now = time.time()
        publisher.publish("nerve.samples", {"ts": now, "orchestrator": "exporter-test-publisher", "chunk": 0, "chunks": 1,
                                            "hosts": {"prom-host": {"hostname": "prom-host.example", "run": "r", "seq": [1],
                                                                    "ts": [now], "metrics": {"cpu": [42.5], "net_sent": [1536.0]},
                                                                    "level": "HIGH", "levels": {"cpu": "HIGH"},
                                                                    "anomaly": {"cpu": 3.25}}}})

    publishing = task.LoopingCall(publish)
    publishing.start(0.5)
    prometheus = PrometheusProcess([exporter.target], workdir=tmp_path, scrape_interval=1.0).start()
    try:
        def answered(expression):
            results = prometheus.query(expression)
            return results[0]["value"][1] if results else None

        cpu = yield wait_until(lambda: answered('nerve_cpu_ratio{host="prom-host"}'), timeout=30, interval=0.5,
                               message="Prometheus to have scraped prom-host's CPU from the exporter")
        assert float(cpu) == 0.425
        assert float(answered('nerve_net_sent_bytes_per_second{host="prom-host"}')) == 1536.0
        assert float(answered('nerve_level{host="prom-host", metric="cpu"}')) == 2
        assert float(answered('nerve_anomaly_score{host="prom-host", metric="cpu"}')) == 3.25
        assert answered('count(nerve_host_level == 2)') is not None
        yield wait_until(lambda: answered("nerve_orchestrator_up") == "1", timeout=15, interval=0.5,
                         message="the orchestrator's counters in Prometheus")
        assert float(answered("nerve_orchestrator_received_total")) >= 0
        assert [target["health"] for target in prometheus.targets()] == ["up"]
        # Every query of the Grafana dashboard is PromQL this Prometheus accepts (label_values is Grafana's own).
        for expression in expressions(json.loads(DASHBOARD.read_text())):
            if not LABEL_VALUES.match(expression):
                prometheus.query(expression.replace("$host", "prom-host").replace("$__rate_interval", "1m"))
    finally:
        publishing.stop()
        prometheus.stop()
        yield publisher.leave()


@pytest_twisted.inlineCallbacks
def test_nerve_up_starts_an_exporter_that_serves_its_simulated_hosts(tmp_path):
    port = free_port()
    up = MeshUpProcess(tmp_path, "--analyzers", "1", "--compute", "0", "--hosts", "2",
                       env={"NERVE_EXPORTER_PORT": str(port)}).wait_ready()
    try:
        exporter = SimpleNamespace(url=f"http://127.0.0.1:{port}/metrics", running=up.running, output=up.output)
        series = yield wait_until(scraped_when(exporter, lambda series: all(
            series_value(series, "nerve_cpu_ratio", host=host) is not None for host in ("sim-0000", "sim-0001"))),
            timeout=40, interval=0.5, message="nerve up's exporter serving the simulated hosts")
        assert 0 <= series_value(series, "nerve_mem_ratio", host="sim-0000") <= 1
        session = yield up.join()
        status = yield up.status(session)
        assert [child["state"] for child in status["children"] if child["name"] == "exporter"] == ["running"]
        yield session.leave()
    finally:
        up.stop()
