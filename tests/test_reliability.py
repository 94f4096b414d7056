"""Faults survived with nothing lost: router restart with replay, an analyzer killed mid-call."""

import os
import signal
import time

import pytest
import pytest_twisted
from autobahn.wamp.types import PublishOptions
from twisted.internet import defer

from components.testing.live import (
    ComponentProcess,
    call_until,
    RouterProcess,
    join,
    measurement,
    publish_acknowledged,
    sleep,
    wait_for_callees,
    wait_until,
)


@defer.inlineCallbacks
def joined_roles(session):
    """The authroles of the backend sessions on the router, as the dashboard's mesh panel sees them."""
    listing = yield session.call("nerve.mesh.sessions")
    return [joined["authrole"] for joined in listing["sessions"]]


@defer.inlineCallbacks
def join_when_up(router, timeout=10):
    """Join the router as a dashboard, retrying while it starts."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            session = yield join(router.websocket_url)
            return session
        except Exception:
            if time.monotonic() > deadline:
                raise
            yield sleep(0.05)


@pytest.fixture
def own_router(tmp_path):
    """A router of this test's own, so stopping it does not disturb the session router."""
    router = RouterProcess(tmp_path).start()
    processes = []
    yield router, processes
    for process in processes:
        process.stop()
    router.stop()


@pytest_twisted.inlineCallbacks
def test_router_restart_loses_nothing_and_components_return_within_3_s(own_router):
    router, processes = own_router
    hosts = 100
    processes += [ComponentProcess(router, "orchestrator"), ComponentProcess(router, "analyzer", "--authid", "restart-a"),
                  ComponentProcess(router, "tracker", "--hosts", str(hosts), "--interval", "1")]
    session = yield join_when_up(router)
    yield wait_for_callees(session, "nerve.stats", 1)
    before = yield call_until(session, "nerve.stats", lambda stats: stats.get("received", 0) >= 3 * hosts, timeout=20,
                              message="three rounds of measurements")

    router.stop()
    yield sleep(10)  # the outage the trackers must buffer through
    router.start()
    ready = time.monotonic()
    session = yield join_when_up(router)
    expected = {"orchestrator", "analyzer", "simulator"}
    while not expected <= set((yield joined_roles(session))):
        assert time.monotonic() - ready < 10, "components did not come back"
        yield sleep(0.05)
    back_after = time.monotonic() - ready
    assert back_after < 3, f"components back {back_after:.1f} s after the router was ready"

    # The outage's buffer replayed and a few live rounds: 16 rounds per host in all since the first.
    yield call_until(session, "nerve.stats", lambda stats: stats["received"] >= before["received"] + 13 * hosts, timeout=20,
                     message="the outage's measurements replayed")
    simulator = processes.pop()
    simulator.stop()  # what it published last may still be on its way: the checks below hold for any prefix
    histories = []
    for index in range(hosts):
        history = yield session.call("nerve.history", f"sim-{index:04d}")
        histories.append(history)
    stats = yield session.call("nerve.stats")
    yield session.leave()
    for history in histories:
        seqs = [sample["seq"] for sample in history["samples"]]
        assert seqs == list(range(1, len(seqs) + 1)), f"{history['host_id']}: gaps or repeats in {seqs}"
        assert len(seqs) >= 16, f"{history['host_id']} has only {len(seqs)} measurements"
    assert stats.get("gaps", 0) == 0, stats
    print(f"components back {back_after:.2f} s after router ready; duplicates discarded: {stats.get('duplicates', 0)}")


@pytest_twisted.inlineCallbacks
def test_analyzer_killed_mid_call_loses_no_analysis_period(router, orchestrator, start, dashboard, watch_prefix):
    yield wait_for_callees(dashboard, "nerve.analyze", 0)
    doomed = start("analyzer", "--authid", "doomed", "--extra-work-ms", "250")
    start("analyzer", "--authid", "survivor", "--extra-work-ms", "250")
    yield wait_for_callees(dashboard, "nerve.analyze", 2)
    analysis = yield watch_prefix("nerve.analysis.kill-")
    hosts = [f"kill-{index}" for index in range(12)]
    sessions = []
    for host_id in hosts:
        sessions.append((yield join(router.rawsocket_url, "tracker", host_id, router.ticket("tracker", host_id))))
    retries_before = (yield dashboard.call("nerve.stats")).get("retries", 0)
    for seq in range(1, 9):
        if seq == 4:
            doomed.kill()
        yield defer.DeferredList([publish_acknowledged(session, f"nerve.measure.{host_id}", measurement(host_id, seq, {"cpu": 40.0}))
                                  for host_id, session in zip(hosts, sessions)])
        yield sleep(1.0)
    yield wait_until(lambda: {p["host_id"] for p in analysis.payloads() if p["seq"] == 8} == set(hosts), timeout=10,
                     message="every host analysed up to seq 8 after the kill")
    for session in sessions:
        yield session.leave()
    stats = yield dashboard.call("nerve.stats")
    assert stats.get("retries", 0) > retries_before, "the kill did not hit a call in flight"
    for host_id in hosts:
        times = [arrived for arrived, (_, p) in zip(analysis.arrivals, analysis.events) if p["host_id"] == host_id]
        longest = max(b - a for a, b in zip(times, times[1:]))
        assert longest < 2.5, f"{host_id} went {longest:.1f} s without analysis"


@pytest_twisted.inlineCallbacks
def test_standby_orchestrator_takes_over_within_3_s_without_duplicates(own_router):
    router, processes = own_router
    first = ComponentProcess(router, "orchestrator", "--authid", "orchestrator-1")
    processes.append(first)
    session = yield join_when_up(router)
    yield wait_for_callees(session, "nerve.stats", 1)
    yield wait_until(lambda: "now active" in first.output(), timeout=10, message="first orchestrator active")
    second = ComponentProcess(router, "orchestrator", "--authid", "orchestrator-2")
    processes += [second, ComponentProcess(router, "analyzer", "--authid", "failover-a"),
                  ComponentProcess(router, "tracker", "--hosts", "20", "--interval", "0.5")]
    yield wait_for_callees(session, "nerve.stats", 2)
    analyses, alerts = [], []
    from autobahn.wamp.types import SubscribeOptions

    yield session.subscribe(lambda event: analyses.append((time.monotonic(), event["host_id"], event["seq"])),
                            "nerve.analysis.", options=SubscribeOptions(match="prefix"))
    yield session.subscribe(lambda event: alerts.append((event.get("host_id"), event.get("seq"), event.get("metric"))),
                            "nerve.alert.", options=SubscribeOptions(match="prefix"))
    yield wait_until(lambda: len(analyses) > 60, timeout=20, message="analyses from the first orchestrator")
    assert "now active" not in second.output(), "two orchestrators active at once"
    first.kill()
    killed = time.monotonic()
    yield wait_until(lambda: any(at > killed + 0.2 for at, _, _ in analyses), timeout=10, message="analysis after the kill")
    resumed = min(at for at, _, _ in analyses if at > killed + 0.2) - killed
    yield sleep(3)  # three more seconds of analysis from the new active one, in which no duplicate may appear
    stats = yield session.call("nerve.stats")
    yield session.leave()
    assert stats["active"] is True and stats.get("takeovers") == 1, stats
    assert resumed < 3, f"standby took {resumed:.1f} s to take over"
    keys = [(host_id, seq) for _, host_id, seq in analyses]
    assert len(keys) == len(set(keys)), "an analysis was published twice for the same (host, seq)"
    assert len(alerts) == len(set(alerts)), "an alert was published twice"
    print(f"standby took over {resumed:.2f} s after the active orchestrator was killed")


@pytest_twisted.inlineCallbacks
def test_overloaded_analyzers_coalesce_report_lag_and_catch_up(router, orchestrator, start, dashboard):
    yield wait_for_callees(dashboard, "nerve.analyze", 0)
    start("analyzer", "--authid", "overloaded", "--extra-work-ms", "600")
    yield wait_for_callees(dashboard, "nerve.analyze", 1)
    hosts = [f"load-{index:02d}" for index in range(30)]
    sessions = []
    for host_id in hosts:
        sessions.append((yield join(router.rawsocket_url, "tracker", host_id, router.ticket("tracker", host_id))))

    @defer.inlineCallbacks
    def rounds(first, count):
        for seq in range(first, first + count):
            yield defer.DeferredList([publish_acknowledged(session, f"nerve.measure.{host_id}", measurement(host_id, seq, {"cpu": 30.0}))
                                      for host_id, session in zip(hosts, sessions)])
            yield sleep(0.5)

    yield rounds(1, 12)
    behind = yield dashboard.call("nerve.stats")
    assert behind["lag_seconds"] > 1.5, behind
    assert behind["backlog"] <= len(hosts) * 600  # bounded per host, whatever the outage
    start("analyzer", "--authid", "relief-1")
    start("analyzer", "--authid", "relief-2")
    yield wait_for_callees(dashboard, "nerve.analyze", 3)
    yield rounds(13, 10)
    caught_up = yield dashboard.call("nerve.stats")
    for session in sessions:
        yield session.leave()
    assert caught_up["lag_seconds"] < 1.0, caught_up
    print(f"lag {behind['lag_seconds']:.1f} s with one slow analyzer, {caught_up['lag_seconds']:.2f} s after two more joined")


@pytest_twisted.inlineCallbacks
def test_malformed_events_are_counted_per_publisher_and_the_consumer_keeps_going(router, orchestrator, dashboard):
    session = yield join(router.rawsocket_url, "tracker", "garbage-host", router.ticket("tracker", "garbage-host"))
    before = (yield dashboard.call("nerve.stats"))["dropped"].get("nerve.measure.garbage-host", 0)
    for bad in ({"seq": 1}, "not an object", measurement("garbage-host", 1, {"cpu": float("nan")}),
                measurement("garbage-host", 2, {"gpu": 1.0}), measurement("other-host", 3, {"cpu": 1.0})):
        yield publish_acknowledged(session, "nerve.measure.garbage-host", bad)
    yield publish_acknowledged(session, "nerve.measure.garbage-host", measurement("garbage-host", 4, {"cpu": 5.0}))
    history = yield call_until(dashboard, "nerve.history", lambda history: history["samples"], "garbage-host",
                               message="the good measurement in the history")
    stats = yield dashboard.call("nerve.stats")
    yield session.leave()
    assert stats["dropped"]["nerve.measure.garbage-host"] - before == 5
    assert [sample["seq"] for sample in history["samples"]] == [4]


@pytest_twisted.inlineCallbacks
def test_keyword_arguments_from_a_publisher_neither_spoof_details_nor_stop_the_consumer(router, orchestrator, dashboard):
    # A sender's kwargs must not break a component's event handlers.
    session = yield join(router.rawsocket_url, "tracker", "kwargs-host", router.ticket("tracker", "kwargs-host"))
    acknowledged = PublishOptions(acknowledge=True)
    yield session.publish("nerve.measure.kwargs-host", measurement("kwargs-host", 1, {"cpu": 1.0}), details="spoofed",
                          options=acknowledged)
    yield session.publish("nerve.measure.kwargs-host", measurement("kwargs-host", 2, {"cpu": 2.0}), surprise=1,
                          options=acknowledged)
    yield publish_acknowledged(session, "nerve.measure.kwargs-host", measurement("kwargs-host", 3, {"cpu": 3.0}))
    history = yield call_until(dashboard, "nerve.history", lambda history: history["samples"] and
                               history["samples"][-1]["seq"] == 3, "kwargs-host", message="seq 3 in the history")
    stats = yield dashboard.call("nerve.stats")
    yield session.leave()
    # The first is a valid measurement on its topic (the router's details win); the second does not fit the handler.
    assert [sample["seq"] for sample in history["samples"]] == [1, 3]
    assert stats["dropped"]["nerve.measure.kwargs-host"] == 1 and "on_measure" not in stats["handler_errors"]


@pytest_twisted.inlineCallbacks
@pytest.mark.parametrize("fail_calls_on_leave", [True, False])
def test_a_call_in_flight_when_the_router_dies_fails_at_once_unless_switched_off(own_router, fail_calls_on_leave):
    from components.mesh.binder import Binder
    from components.mesh.config import MeshConfig
    from components.mesh.session import Mesh

    router, _ = own_router
    callee = yield join(router.rawsocket_url, "analyzer", "never-answers", router.ticket("analyzer", "never-answers"))
    yield callee.register(lambda *args, **kwargs: defer.Deferred(), "nerve.analyze")
    caller = yield join(router.rawsocket_url, "orchestrator", "caller", router.ticket("orchestrator", "caller"))
    # The caller's leave goes to a Binder as a component's does under `nerve run`.
    config = MeshConfig(role="orchestrator", tuning={"fail_calls_on_leave": fail_calls_on_leave})
    binder = Binder([], Mesh(type("Config", (), {"mesh": config})()), fail_outstanding=fail_calls_on_leave)
    caller.on("leave", binder.on_leave)
    outcomes = []
    for _ in range(3):
        caller.call("nerve.analyze", [1]).addBoth(outcomes.append)
    yield sleep(0.3)  # the calls reach the callee, which never answers
    os.killpg(router.process.pid, signal.SIGKILL)  # the router's whole process group: controller and worker
    if fail_calls_on_leave:
        yield wait_until(lambda: len(outcomes) == 3, timeout=5, message="the three calls failing")
        assert all("transport_lost" in str(outcome) or "closed" in str(outcome) for outcome in outcomes), outcomes
    else:
        yield sleep(2)  # how long the calls stay pending is the point: Autobahn's Component session never fails them
        assert outcomes == []
