"""The examples in examples/ do what the README says, run on a FakeMesh."""

from pathlib import Path

import pytest

from components import InvalidArgument
from components.mesh.decorators import bindings_of
from components.mesh.runner import load_module
from components.testing import FakeMesh

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.fixture
def alert_counter():
    return FakeMesh.load(EXAMPLES / "alert_counter.py")


def test_alert_counter_counts_alerts_per_host_and_answers_the_count(alert_counter):
    for host in ("web-01", "web-01", "db-02"):
        assert alert_counter.deliver(f"nerve.alert.{host}", {"metric": "cpu", "level": "HIGH"}) == 1
    assert alert_counter.deliver("nerve.analysis.web-01", {"level": "HIGH"}) == 0
    assert alert_counter.call("app.alerts.count") == 3
    assert alert_counter.call("app.alerts.count", "web-01") == 2
    assert alert_counter.call("app.alerts.count", host_id="db-02") == 1
    assert alert_counter.call("app.alerts.count", "never-seen") == 0
    with pytest.raises(InvalidArgument, match="host_id must be a string, got int"):
        alert_counter.call("app.alerts.count", 7)


def test_alert_counter_publishes_a_summary_every_five_seconds(alert_counter):
    alert_counter.deliver("nerve.alert.web-01", {"level": "HIGH"})
    alert_counter.advance(4.9)
    assert alert_counter.published == [], "now=False: no summary at join"
    alert_counter.advance(0.1)
    assert alert_counter.published_on("app.alerts.summary") == [{"web-01": 1}]
    alert_counter.deliver("nerve.alert.db-02", {"level": "WARN"})
    alert_counter.advance(10)
    assert alert_counter.published_on("app.alerts.summary") == [{"web-01": 1}, {"web-01": 1, "db-02": 1},
                                                                {"web-01": 1, "db-02": 1}]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda path: path.name)
def test_every_example_binds_on_a_fake_mesh(path):
    # `nerve run examples/<name>.py` must find something to bind, and binding must not fail.
    assert bindings_of(load_module(str(path))), f"{path.name} has no decorated functions"
    FakeMesh.load(path)
