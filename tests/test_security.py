"""Nobody where they don't belong: per-tracker topics, the simulator's own URI space, the read-only dashboard."""

import json

import pytest
import pytest_twisted
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions, RegisterOptions
from twisted.internet import defer

from components.testing.live import join, measurement, publish_acknowledged, wait_until
from router.auth import authorize_tracker


@defer.inlineCallbacks
def refused(action):
    """The WAMP error URI an action fails with (AssertionError if it succeeds)."""
    try:
        yield action()
    except ApplicationError as error:
        return error.error
    raise AssertionError("the action was allowed")


@pytest.mark.parametrize("authid, uri, action, allowed", [
    ("web-01", "nerve.measure.web-01", "publish", True),
    ("web-01", "nerve.measure.web-02", "publish", False),
    ("web-01", "nerve.measure.web-01.x", "publish", False),
    ("web-01", "nerve.measure.web-01", "subscribe", False),
    ("web-01", "nerve.analysis.web-01", "publish", False),
    ("web-01", "nerve.analyze", "register", False),
    ("web-01", "wamp.subscription.lookup", "call", True),
])
def test_tracker_authorizer_table(authid, uri, action, allowed):
    decision = authorize_tracker({"authid": authid, "authrole": "tracker"}, uri, action)
    assert bool(decision and decision["allow"]) is allowed
    if allowed and uri.startswith("nerve.measure."):
        assert decision["cache"] is False  # Crossbar's cache ignores the authid


@pytest_twisted.inlineCallbacks
def test_a_tracker_cannot_publish_as_another_host(router):
    web01 = yield join(router.rawsocket_url, "tracker", "web-01", router.ticket("tracker", "web-01"))
    yield publish_acknowledged(web01, "nerve.measure.web-01", measurement("web-01", 1, {"cpu": 1.0}))
    error = yield refused(lambda: publish_acknowledged(web01, "nerve.measure.web-02", measurement("web-02", 1, {"cpu": 99.0})))
    assert error == "wamp.error.not_authorized"
    # A second tracker is refused its neighbour's topic even after the first was allowed its own (no authid-blind cache).
    web02 = yield join(router.rawsocket_url, "tracker", "web-02", router.ticket("tracker", "web-02"))
    error = yield refused(lambda: publish_acknowledged(web02, "nerve.measure.web-01", measurement("web-01", 2, {"cpu": 99.0})))
    assert error == "wamp.error.not_authorized"
    yield web01.leave()
    yield web02.leave()


@pytest_twisted.inlineCallbacks
def test_the_simulator_has_its_own_uri_space(router):
    simulator = yield join(router.rawsocket_url, "simulator", "simulator", router.ticket("simulator", "simulator"))
    yield publish_acknowledged(simulator, "nerve.measure.sim-0001", measurement("sim-0001", 1, {"cpu": 1.0}))
    error = yield refused(lambda: publish_acknowledged(simulator, "nerve.measure.web-01", measurement("web-01", 1, {"cpu": 1.0})))
    assert error == "wamp.error.not_authorized"
    yield simulator.leave()


SHARED_POLICY = {"nerve.analyze": "roundrobin", "nerve.snapshot": "first"}
DENIED_FOR_DASHBOARD = [
    ("publish", "nerve.measure.x"), ("publish", "nerve.analysis.x"), ("publish", "nerve.alert.x"), ("publish", "nerve.digest"),
    ("publish", "app.x"), ("register", "nerve.analyze"), ("register", "nerve.snapshot"), ("register", "app.x"),
    ("call", "nerve.analyze"), ("call", "nerve.auth.authenticate"), ("call", "wamp.session.kill"),
    ("call", "wamp.subscription.list_subscribers"), ("call", "app.alerts.count"), ("subscribe", "app.alerts.summary"),
]


@pytest.mark.parametrize("action, uri", DENIED_FOR_DASHBOARD)
@pytest_twisted.inlineCallbacks
def test_anonymous_dashboard_is_denied(dashboard, action, uri):
    attempts = {
        "publish": lambda: dashboard.publish(uri, {"x": 1}, options=PublishOptions(acknowledge=True)),
        # Crossbar checks the invocation policy before the role, so register as the real callees do.
        "register": lambda: dashboard.register(lambda *a: None, uri, options=RegisterOptions(invoke=SHARED_POLICY.get(uri, "single"))),
        "call": lambda: dashboard.call(uri, 1),
        "subscribe": lambda: dashboard.subscribe(lambda *a: None, uri),
    }
    error = yield refused(attempts[action])
    assert error == "wamp.error.not_authorized"


@pytest.mark.parametrize("role", ["tracker", "analyzer", "orchestrator", "operator"])
@pytest_twisted.inlineCallbacks
def test_wrong_or_missing_credentials_are_refused_naming_the_authid(router, role):
    for ticket in ("wrong", ""):
        with pytest.raises(Exception) as raised:
            yield join(router.rawsocket_url, role, "mallory", ticket)
        assert "authid 'mallory'" in str(raised.value) and "nerve.error.not_authenticated" in str(raised.value)


@pytest_twisted.inlineCallbacks
def test_repeated_failures_are_logged_by_the_router_without_secrets(router):
    for _ in range(3):
        with pytest.raises(Exception):
            yield join(router.rawsocket_url, "tracker", "eve", "bad")
    yield wait_until(lambda: "authid 'eve'" in router.log_text(), timeout=5, message="refusal in the router log")
    log = router.log_text()
    assert "authentication refused" in log
    for secret in router.role_secrets.values():
        assert secret not in log


def test_no_secret_reaches_the_web_folder_or_git(router):
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    tracked = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True).stdout.split()
    assert not [path for path in tracked if "secrets" in path and path.endswith(".json")]
    ignored = subprocess.run(["git", "check-ignore", ".crossbar/secrets.json"], cwd=root, capture_output=True, text=True)
    assert ignored.returncode == 0
    secrets = json.loads((root / ".crossbar" / "secrets.json").read_text())["roles"].values() \
        if (root / ".crossbar" / "secrets.json").exists() else []
    for path in (root / "web").rglob("*"):
        if path.is_file() and "node_modules" not in path.parts:
            text = path.read_text(errors="ignore")
            assert not any(secret in text for secret in secrets), path
