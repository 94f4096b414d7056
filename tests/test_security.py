"""Nobody where they don't belong: per-tracker topics, the simulator's own URI space, the read-only dashboard."""

import json

import pytest
import pytest_twisted
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions, RegisterOptions
from twisted.internet import defer

from components.mesh import credentials
from components.testing.live import EventLog, join, measurement, publish_acknowledged, sleep, wait_until
from router.auth import Authenticator, authorize_tracker


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
    # Other sessions' transports (addresses, HTTP headers): the mesh panel reads nerve.mesh.* instead.
    ("call", "wamp.session.list"), ("call", "wamp.session.get"), ("call", "wamp.session.count"),
    ("subscribe", "wamp.session.on_join"), ("subscribe", "wamp.session.on_leave"),
    ("call", "wamp.registration.list_callees"), ("call", "wamp.registration.get"),
    ("subscribe", "wamp.registration.on_register"), ("call", "wamp.subscription.count_subscribers"),
    # Compute and the router's own counters are not for anonymous visitors.
    ("call", "nerve.tsp.solve"), ("call", "nerve.router.stats"),
    ("publish", "nerve.mesh.joined"), ("publish", "nerve.mesh.analyzers"),
    # `nerve up`'s status is read-only for anonymous: only the supervisor role publishes and serves it.
    ("publish", "nerve.supervisor.children"), ("register", "nerve.supervisor.status"),
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


# -- what anonymous sees of the other sessions: nerve.mesh, filtered by the router ---------------------------------

LEAKS = ("transport", "http_headers", "peer", "127.0.0.1", "tcp4", "cookie", "authextra", "authmethod", "user-agent")


def assert_filtered(value):
    """value shows no transport, header or address of any session."""
    text = json.dumps(value).lower()
    for leak in LEAKS:
        assert leak not in text, f"{leak!r} in {value}"


@pytest_twisted.inlineCallbacks
def test_mesh_sessions_show_who_is_there_and_nothing_of_their_connections(router, dashboard):
    joined, left = EventLog(), EventLog()
    yield dashboard.subscribe(joined, "nerve.mesh.joined")
    yield dashboard.subscribe(left, "nerve.mesh.left")
    # A backend session over WebSocket: the meta API would hand out its HTTP headers and its address.
    operator = yield join(router.websocket_url, "operator", "mesh-view-op", router.ticket("operator", "mesh-view-op"))
    other_dashboard = yield join(router.websocket_url)
    yield wait_until(lambda: any(event.get("authid") == "mesh-view-op" for event in joined.payloads()), timeout=5,
                     message="nerve.mesh.joined for the operator")
    view = yield dashboard.call("nerve.mesh.sessions")
    assert set(view) == {"sessions", "anonymous", "analyzers"}
    mine = [record for record in view["sessions"] if record["authid"] == "mesh-view-op"]
    assert mine == [{"session": operator.session_id, "authid": "mesh-view-op", "authrole": "operator"}]
    assert all(set(record) == {"session", "authid", "authrole"} for record in view["sessions"])
    # Anonymous sessions are only counted: neither this one nor the other is listed.
    listed = {record["session"] for record in view["sessions"]}
    assert dashboard.session_id not in listed and other_dashboard.session_id not in listed
    assert view["anonymous"] >= 2
    assert_filtered(view)
    yield operator.leave()
    yield other_dashboard.leave()
    yield wait_until(lambda: any(event.get("authid") == "mesh-view-op" for event in left.payloads()), timeout=5,
                     message="nerve.mesh.left for the operator")
    # It left with a GOODBYE (session.leave()), so the router says it left cleanly.
    assert {"session": operator_id(left), "authid": "mesh-view-op", "authrole": "operator", "goodbye": True} in left.payloads()
    assert any(set(event) == {"anonymous"} for event in joined.payloads())
    for event in joined.payloads() + left.payloads():
        assert set(event) in ({"session", "authid", "authrole"}, {"session", "authid", "authrole", "goodbye"},
                              {"anonymous"}), event
        assert_filtered(event)


def operator_id(events):
    return next(event["session"] for event in events.payloads() if event.get("authid") == "mesh-view-op")


@pytest_twisted.inlineCallbacks
def test_mesh_view_follows_analyzers_by_their_registration(router, dashboard):
    from autobahn.wamp.types import RegisterOptions as Options

    analyzers = EventLog()
    yield dashboard.subscribe(analyzers, "nerve.mesh.analyzers")
    before = (yield dashboard.call("nerve.mesh.sessions"))["analyzers"]
    analyzer = yield join(router.rawsocket_url, "analyzer", "mesh-view-an", router.ticket("analyzer", "mesh-view-an"))
    # Joined but not yet serving: not an analyzer instance yet.
    yield sleep(0.2)
    assert "mesh-view-an" not in [entry["authid"] for entry in (yield dashboard.call("nerve.mesh.sessions"))["analyzers"]]
    yield analyzer.register(lambda *args, **kwargs: None, "nerve.analyze", options=Options(invoke="roundrobin"))
    entry = {"session": analyzer.session_id, "authid": "mesh-view-an"}
    yield wait_until(lambda: any(entry in event["analyzers"] for event in analyzers.payloads()), timeout=5,
                     message="nerve.mesh.analyzers with the new analyzer")
    assert entry in (yield dashboard.call("nerve.mesh.sessions"))["analyzers"]
    yield analyzer.leave()
    yield wait_until(lambda: analyzers.payloads() and entry not in analyzers.payloads()[-1]["analyzers"], timeout=5,
                     message="nerve.mesh.analyzers without it")
    assert (yield dashboard.call("nerve.mesh.sessions"))["analyzers"] == before


# -- the role comes from the ticket: a standard client (a browser) names no role ---------------------------------

def test_the_authenticator_finds_the_role_from_the_ticket():
    secrets = {role: f"secret-{role}" for role in credentials.BACKEND_ROLES}
    authenticator = Authenticator(secrets)
    ticket = credentials.ticket_for(secrets["operator"], "alice")
    assert authenticator.authenticate("nerve", "alice", {"ticket": ticket}) == {"role": "operator", "authid": "alice"}
    assert authenticator.authenticate("nerve", "alice", {"ticket": ticket, "authextra": {"role": "operator"}})["role"] \
        == "operator"
    # A ticket is bound to its authid, and naming another role than the ticket's is refused.
    for authid, details in (("mallory", {"ticket": ticket}), ("alice", {"ticket": "guess"}),
                            ("alice", {"ticket": ticket, "authextra": {"role": "orchestrator"}})):
        with pytest.raises(ApplicationError) as refused_:
            authenticator.authenticate("nerve", authid, details)
        assert refused_.value.error == "nerve.error.not_authenticated" and f"authid '{authid}'" in refused_.value.args[0]


@pytest_twisted.inlineCallbacks
def test_a_websocket_client_that_names_no_role_joins_with_its_tickets_role(router):
    from autobahn.twisted.component import Component
    from twisted.internet import reactor

    ticket = router.ticket("operator", "browser-like")
    component = Component(transports=[{"url": router.websocket_url, "type": "websocket", "serializers": ["json"],
                                       "max_retries": 0}],
                          realm="nerve", authentication={"ticket": {"authid": "browser-like", "ticket": ticket}})
    joined = defer.Deferred()
    component.on("join", lambda session, details: joined.called or joined.callback((session, details)))
    component.on("leave", lambda session, details: joined.called or joined.errback(RuntimeError(details.reason)))
    component.start(reactor)
    session, details = yield joined
    assert (details.authid, details.authrole) == ("browser-like", "operator")
    yield session.leave()


# -- who may reach the WebSocket: allowed origins; the listen address -------------------------------------------

def handshake(port, origin=None):
    """The HTTP status line of a raw WebSocket opening handshake to /ws with this Origin header (none if None)."""
    from components.testing.raw import websocket_upgrade

    connection, head = websocket_upgrade(port, origin=origin)
    connection.close()
    return head.split(b"\r\n", 1)[0].decode(errors="replace")


@pytest.mark.parametrize("origin, accepted", [
    (None, True),  # components and the CLI send no Origin
    ("http://127.0.0.1:{port}", True),
    ("http://localhost:{port}", True),
    ("http://evil.example", False),
    ("https://evil.example:{port}", False),
    ("http://127.0.0.1.evil.example:{port}", False),
    ("http://127.0.0.1:1", False),  # another port of this machine is another site
    ("null", False),  # sandboxed iframes and file:// pages
])
def test_the_websocket_takes_browsers_from_the_routers_own_origins_only(router, origin, accepted):
    status = handshake(router.port, origin and origin.format(port=router.port))
    if accepted:
        assert status.startswith("HTTP/1.1 101 "), status
    else:
        assert status.startswith("HTTP/1.1 400 ") and "not allowed" in status, status


def test_the_router_listens_on_loopback_only_by_default(router):
    import socket

    import psutil

    others = [address.address for addresses in psutil.net_if_addrs().values() for address in addresses
              if address.family == socket.AF_INET and not address.address.startswith("127.")]
    if not others:
        pytest.skip("this machine has no non-loopback IPv4 address")
    with socket.socket() as probe:
        probe.settimeout(2)
        assert probe.connect_ex((others[0], router.port)) != 0, f"the router answers on {others[0]}"
        with socket.create_connection(("127.0.0.1", router.port), timeout=2):
            pass
