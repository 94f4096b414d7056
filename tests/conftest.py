"""Session fixtures: one real Crossbar router for the whole run, and an orchestrator on it."""

import pytest
import pytest_twisted
from autobahn.wamp.types import SubscribeOptions

from components.testing.live import ComponentProcess, EventLog, RouterProcess, join, wait_for_callees


@pytest.fixture(scope="session")
def router(tmp_path_factory):
    """A real router on a free port with the project's config; stopped at the end of the session."""
    process = RouterProcess(tmp_path_factory.mktemp("router")).start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def orchestrator(router):
    """One orchestrator for the session (small batches, spread to at most 10 hosts, so overload is easy to provoke)."""
    process = ComponentProcess(router, "orchestrator", "--batch-size", "5", "--max-batch-size", "10", "--tick", "0.5")
    try:
        session = pytest_twisted.blockon(join(router.websocket_url))
        pytest_twisted.blockon(wait_for_callees(session, "nerve.stats", 1))
        pytest_twisted.blockon(session.leave())
        yield process
    finally:
        # Also when it never came up: a failed set-up must not leave an orchestrator running after the session.
        process.stop()


@pytest.fixture
def start(router):
    """Start `nerve` component processes for one test; all are stopped when it ends."""
    started = []

    def start_component(*args, env=None):
        process = ComponentProcess(router, *args, env=env)
        started.append(process)
        return process

    yield start_component
    for process in started:
        process.stop()


@pytest.fixture
def dashboard(router):
    """An anonymous WebSocket session, as the browser dashboard joins."""
    session = pytest_twisted.blockon(join(router.websocket_url))
    yield session
    if session.is_attached():
        pytest_twisted.blockon(session.leave())


@pytest.fixture
def operator_session(router):
    """A backend session joined as an operator (the role that may start compute and act on alerts)."""
    session = pytest_twisted.blockon(join(router.rawsocket_url, "operator", "test-operator",
                                          router.ticket("operator", "test-operator")))
    yield session
    if session.is_attached():
        pytest_twisted.blockon(session.leave())


@pytest.fixture
def tracker_session(router):
    """A backend session joined as the tracker with authid 'test-host'."""
    session = pytest_twisted.blockon(join(router.rawsocket_url, "tracker", "test-host", router.ticket("tracker", "test-host")))
    yield session
    if session.is_attached():
        pytest_twisted.blockon(session.leave())


@pytest.fixture
def watch_prefix(dashboard):
    """Subscribe the dashboard session to a topic prefix; a Deferred of the EventLog collecting it."""

    def subscribe(prefix):
        events = EventLog()
        subscribed = dashboard.subscribe(events, prefix, options=SubscribeOptions(match="prefix", details_arg="details"))
        return subscribed.addCallback(lambda _: events)

    return subscribe
