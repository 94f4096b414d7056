"""PrometheusProcess: a real Prometheus server (the Debian package `prometheus`) scraping targets, for tests and benches.

    prometheus = PrometheusProcess(["127.0.0.1:9464"]).start()
    prometheus.query('nerve_cpu_ratio{host="web-01"}')   # the instant vector's results, as the HTTP API returns them
    prometheus.stop()

`scrape` and `series_of` read an exporter's /metrics the way a test compares it.
"""

import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from components.node.routerctl import free_port, wait_for_port
from components.testing.live import end_process

INSTALL_HINT = "install the Debian package: apt-get install prometheus (`make test` does)"


def series_of(exposition):
    """{(sample name, frozenset of (label, value)): value} of a /metrics text, read by prometheus_client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(exposition) for sample in family.samples}


def series_value(series, name, **labels):
    """The value of one series of series_of(...), or None when it is absent."""
    return series.get((name, frozenset(labels.items())))


def scrape(url, timeout=10):
    """GET a /metrics URL; its text."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def scraped_series(url):
    """series_of the /metrics at url, or None while nothing listens there (an exporter still starting)."""
    try:
        return series_of(scrape(url))
    except (urllib.error.URLError, ConnectionError):
        return None


def prometheus_binary():
    """The prometheus executable on PATH, or None."""
    return shutil.which("prometheus")


class PrometheusProcess:
    """Prometheus on a free port of 127.0.0.1 with a config of its own scraping `targets` (host:port of /metrics)
    every `scrape_interval` seconds and its storage in a temporary directory."""

    def __init__(self, targets, workdir=None, port=None, scrape_interval=1.0):
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="nerve-prometheus-"))
        self.port = port or free_port()
        self.config_path = self.workdir / "prometheus.yml"
        self.log_path = self.workdir / "prometheus.log"
        interval = f"{int(scrape_interval * 1000)}ms"
        config = {"global": {"scrape_interval": interval, "evaluation_interval": interval},
                  "scrape_configs": [{"job_name": "nerve", "static_configs": [{"targets": list(targets)}]}]}
        self.config_path.write_text(json.dumps(config, indent=2))  # JSON is YAML: no YAML library needed
        self.process = None

    @property
    def url(self):
        """http://127.0.0.1:PORT"""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout=30.0):
        """Start Prometheus and wait until its HTTP API answers; RuntimeError if the binary is missing."""
        binary = prometheus_binary()
        if binary is None:
            raise RuntimeError(f"no prometheus executable on PATH: {INSTALL_HINT}")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [binary, f"--config.file={self.config_path}", f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        wait_for_port(self.port, self.process, timeout=timeout)
        while not self.ready():  # the port opens before the storage is: queries get 503 until then
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Prometheus did not become ready within {timeout:.0f} s:\n{self.log_text()[-2000:]}")
            time.sleep(0.1)
        return self

    def ready(self):
        """Whether /-/ready says Prometheus serves queries."""
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    def api(self, path, **params):
        """GET /api/v1/<path> with params; the `data` of its JSON answer (RuntimeError with Prometheus' reason when the
        status is not success, e.g. a query it cannot parse)."""
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as error:  # a refused query says why in its body
            answer = json.load(error)
        if answer.get("status") != "success":
            raise RuntimeError(f"Prometheus {path} answered {answer}")
        return answer["data"]

    def query(self, expression):
        """The results of an instant query: [{metric: {labels}, value: [time, "value"]}]."""
        return self.api("query", query=expression)["result"]

    def targets(self):
        """The scrape targets with their health and last error, as /api/v1/targets lists them."""
        return self.api("targets")["activeTargets"]

    def log_text(self):
        """What Prometheus printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout=10):
        """SIGTERM, then SIGKILL if it takes longer than timeout."""
        if self.process is not None:
            end_process(self.process, timeout=timeout)
