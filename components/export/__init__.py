"""The mesh's live data for Prometheus: `nerve exporter` serves /metrics from the nerve.samples batches and nerve.stats."""

# Light on purpose: the `nerve` command line imports this package for every command, the tracker's included.
DEFAULT_PORT = 9464  # OpenTelemetry's Prometheus exporters use it too, so scrape configs often list it already
