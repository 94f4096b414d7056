"""docs/grafana-dashboard.json loads, and every PromQL expression in it names only metrics the exporter exposes."""

import json
import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from components.export.collector import STATS_COUNTERS, STATS_GAUGES, FleetCollector
from components.monitor.measure import MEASURE_SCHEMA

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
# What PromQL spells with letters besides metric names: operators and modifiers (functions are followed by "(").
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without", "on", "ignoring", "group_left",
                "group_right"}
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
LABEL_VALUES = re.compile(r"^label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)$")


def exposed():
    """{sample name: set of label names} of an exposition with every schema family, a level, an anomaly score, the
    orchestrator's counters and the process metrics: every name the exporter can serve."""
    collector = FleetCollector(stale_after=60)
    metrics = {family + (".x" if spec.get("per") else ""): [1.0] for family, spec in MEASURE_SCHEMA.items()}
    collector.ingest({"hosts": {"h": {"hostname": "h", "ts": [1e9], "metrics": metrics, "level": "LOW",
                                      "levels": {"cpu": "LOW"}, "anomaly": {"cpu": 1.0}}}})
    collector.clock = lambda: 1e9  # the host stays live whatever the machine's clock says
    collector.set_stats({name: 1 for name in STATS_GAUGES}
                        | {"dropped": {"t": 1}, "handler_errors": {"f": 1}, "gc": {"count": 1, "seconds": 0.1},
                           "analysis_latency": {"p50_ms": 1, "p99_ms": 2},
                           "analysis_latency_histogram": {"edges_ms": [10], "counts": [1, 1]}})
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    names = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def expressions(node):
    """Every PromQL expression of the dashboard: the panels' targets and the variables' queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            else:
                yield from expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from expressions(item)


def metric_names(expression):
    """The metric names a PromQL expression reads: identifiers left once strings, label matchers, ranges, grouping
    clauses, functions, keywords and numbers are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = GROUPING.sub(" ", text)
    tokens = re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*(?=\s*(\()?)", text)
    return {token.group(0) for token in tokens
            if token.group(1) is None and token.group(0).lower() not in PROMQL_WORDS
            and not re.match(r"^\d", token.group(0))}


def test_the_dashboard_loads_as_a_grafana_import_with_a_host_variable_and_a_prometheus_input():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    assert [variable["name"] for variable in dashboard["templating"]["list"]] == ["host"]
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {"Hosts by level", "Top 10 hosts by CPU", "CPU", "Memory and swap", "Disk used", "Network", "Anomaly scores",
            "Measurements and analyses per second"} <= titles
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_every_expression_in_the_dashboard_names_only_metrics_the_exporter_exposes():
    names = exposed()
    found = list(expressions(json.loads(DASHBOARD.read_text())))
    assert len(found) > 20
    for expression in found:
        variable = LABEL_VALUES.match(expression)
        if variable:
            metric, label = variable.groups()
            assert label in names.get(metric, ()), f"{expression}: the exporter has no {metric} with a {label} label"
            continue
        used = metric_names(expression)
        assert used, f"{expression!r} names no metric"
        assert used <= set(names), f"{expression!r} names metrics the exporter does not expose: {used - set(names)}"


@pytest.mark.parametrize("expression, names", [
    ('histogram_quantile(0.99, sum by (le) (rate(nerve_x_bucket{host="$host"}[$__rate_interval])))', {"nerve_x_bucket"}),
    ("count(nerve_host_level == 2) or vector(0)", {"nerve_host_level"}),
    ("topk(10, abs(nerve_anomaly_score))", {"nerve_anomaly_score"}),
    ("nerve_cpu_percent / on (host) group_left nerve_mem_ratio", {"nerve_cpu_percent", "nerve_mem_ratio"}),
])
def test_metric_names_are_read_out_of_promql(expression, names):
    # The check above must be able to fail: a misspelt name comes out of the expression as it is.
    assert metric_names(expression) == names


def test_the_grafana_doc_names_every_metric_the_exporter_serves():
    doc = (ROOT / "docs" / "grafana.md").read_text()
    missing = [name for name in exposed() if name.startswith("nerve_") and not name.startswith("nerve_orchestrator_")
               and name not in doc]
    missing += [f"nerve.stats field {field}" for field in (*STATS_COUNTERS, *STATS_GAUGES) if f"`{field}`" not in doc]
    assert not missing, f"docs/grafana.md does not name: {missing}"
