"""The alert keeper against a real router: operators ack and silence, anonymous is refused, bad input gets nerve.error
URIs, a restart keeps acks and silences, a killed tracker's host is DOWN within 2 s, a stopped one is OFFLINE and a hung
one (its session still open) DOWN once silent for --down-after."""

import signal
import subprocess
import sys
import time

import pytest_twisted
from autobahn.twisted.component import Component
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions, SubscribeOptions
from twisted.internet import defer, reactor

from components.testing.live import (ComponentProcess, EventLog, RouterProcess, call_until, join, sleep,
                                     wait_until)
from tests.test_security import refused

FIRST_MEASUREMENT_SECONDS = 15  # a tracker process imports psutil and autobahn, then waits for an orchestrator


def level_event(host, metric="cpu", level="HIGH", previous="LOW"):
    return {"host_id": host, "hostname": host, "metric": metric, "previous": previous, "level": level,
            "ts": time.time(), "seq": 1, "value": 93.5}


def start_keeper(start, data_dir):
    return start("alerts", "--data-dir", str(data_dir))


@defer.inlineCallbacks
def active_keeper(operator):
    """Wait until a keeper is active (it takes over within 0.5 s of joining)."""
    yield call_until(operator, "nerve.alerts.stats", lambda stats: stats["active"], timeout=20,
                     message="an active alert keeper")


@pytest_twisted.inlineCallbacks
def test_operators_ack_and_silence_anonymous_is_refused_and_a_restart_keeps_both(router, start, dashboard,
                                                                                 operator_session, tmp_path):
    keeper = start_keeper(start, tmp_path)
    yield active_keeper(operator_session)
    changes = EventLog()
    yield dashboard.subscribe(changes, "nerve.alerts.changed", options=SubscribeOptions(details_arg="details"))
    yield operator_session.publish("nerve.alert.ack-web-01", level_event("ack-web-01"),
                                   options=PublishOptions(acknowledge=True))
    opened = yield call_until(dashboard, "nerve.alerts.open",
                              lambda answer: any(a["host_id"] == "ack-web-01" for a in answer["alerts"]))
    [alert] = [a for a in opened["alerts"] if a["host_id"] == "ack-web-01"]
    assert (alert["state"], alert["level"], alert["metric"]) == ("firing", "HIGH", "cpu")

    # Anonymous may read, never change.
    for attempt in (lambda: dashboard.call("nerve.alert.ack", alert["id"]),
                    lambda: dashboard.call("nerve.silence.create", {"host": "ack-*"}, duration=60),
                    lambda: dashboard.call("nerve.silence.expire", "x")):
        assert (yield refused(attempt)) == "wamp.error.not_authorized"
    assert (yield dashboard.call("nerve.silence.list")) == {"silences": []}

    acked = yield operator_session.call("nerve.alert.ack", alert["id"], comment="on it")
    assert (acked["state"], acked["acked_by"], acked["ack_comment"]) == ("acknowledged", "test-operator", "on it")
    yield wait_until(lambda: any(event.get("acked_by") == "test-operator" for event in changes.payloads()),
                     message="the ack on nerve.alerts.changed")

    # Bad input: a nerve.error URI and a message naming the field.
    bad = [(lambda: operator_session.call("nerve.alert.ack", "ack-web-01/cpu/1"), "nerve.error.not_found", "alert_id"),
           (lambda: operator_session.call("nerve.alert.ack", alert["id"], comment="x" * 1001),
            "nerve.error.invalid_argument", "comment"),
           (lambda: operator_session.call("nerve.silence.create", {"host": "ack-*"}, until=time.time() - 60),
            "nerve.error.invalid_argument", "until"),
           (lambda: operator_session.call("nerve.silence.create", {"host": "ack-[z-a]"}, duration=60),
            "nerve.error.invalid_argument", "matchers.host"),
           (lambda: operator_session.call("nerve.silence.create", {"hots": "ack-*"}, duration=60),
            "nerve.error.invalid_argument", "unknown key 'hots'"),
           (lambda: operator_session.call("nerve.silence.create", {"host": "ack-*"}, duration=0),
            "nerve.error.invalid_argument", "duration")]
    for attempt, uri, field in bad:
        try:
            yield attempt()
        except ApplicationError as error:
            assert error.error == uri and field in error.args[0], (error.error, error.args)
        else:
            raise AssertionError(f"accepted what should fail with {uri} naming {field}")

    silence = yield operator_session.call("nerve.silence.create", {"host": "ack-*", "metric": "cpu"}, duration=3600,
                                          comment="maintenance")
    assert silence["created_by"] == "test-operator" and silence["state"] == "active"
    yield wait_until(lambda: any(event.get("silenced_by") == silence["id"] for event in changes.payloads()),
                     message="the alert marked silenced")

    # Restart the keeper on the same data directory: the ack and the silence are still there.
    assert keeper.stop() == 0
    start_keeper(start, tmp_path)
    yield active_keeper(operator_session)
    opened = yield dashboard.call("nerve.alerts.open")
    [alert] = [a for a in opened["alerts"] if a["host_id"] == "ack-web-01"]
    assert (alert["state"], alert["acked_by"], alert["silenced_by"]) == ("silenced", "test-operator", silence["id"])
    assert [s["id"] for s in opened["silences"]] == [silence["id"]]
    expired = yield operator_session.call("nerve.silence.expire", silence["id"])
    assert expired["state"] == "expired"


@pytest_twisted.inlineCallbacks
def test_a_killed_tracker_is_down_within_2_s_and_a_stopped_one_offline(router, orchestrator, start, dashboard,
                                                                      operator_session, tmp_path):
    start_keeper(start, tmp_path)
    yield active_keeper(operator_session)
    host_events = EventLog()
    yield dashboard.subscribe(host_events, "nerve.alert.down-host", options=SubscribeOptions(details_arg="details"))
    tracker = start("tracker", "--host-id", "down-host", "--interval", "0.5")
    yield call_until(dashboard, "nerve.snapshot", lambda snap: "down-host" in snap["hosts"],
                     timeout=FIRST_MEASUREMENT_SECONDS, message="the tracker's first measurement")
    tracker.kill()
    killed_at = time.monotonic()
    yield wait_until(lambda: any(event.get("level") == "DOWN" for event in host_events.payloads()), timeout=5,
                     message="the host DOWN")
    took = time.monotonic() - killed_at
    assert took < 2.0, f"DOWN {took:.2f} s after SIGKILL"
    opened = yield dashboard.call("nerve.alerts.open")
    assert [(a["metric"], a["level"]) for a in opened["alerts"] if a["host_id"] == "down-host"] == [("host", "DOWN")]
    yield call_until(dashboard, "nerve.snapshot", lambda snap: snap["hosts"]["down-host"]["level"] == "DOWN",
                     message="DOWN as the host's level in the snapshot")

    # Back again: the DOWN alert resolves. Then SIGTERM: the tracker says goodbye, the host is OFFLINE, no alert.
    tracker = start("tracker", "--host-id", "down-host", "--interval", "0.5")
    yield wait_until(lambda: host_events.payloads()[-1].get("level") == "UP", timeout=FIRST_MEASUREMENT_SECONDS,
                     message="the host UP again")
    opened = yield dashboard.call("nerve.alerts.open")
    assert [a for a in opened["alerts"] if a["host_id"] == "down-host"] == []
    yield call_until(dashboard, "nerve.snapshot", lambda snap: snap["hosts"]["down-host"]["level"] != "DOWN",
                     message="the host's level no longer DOWN")
    assert tracker.stop() == 0
    yield wait_until(lambda: host_events.payloads()[-1].get("level") == "OFFLINE", timeout=5, message="OFFLINE")
    opened = yield dashboard.call("nerve.alerts.open")
    assert [a for a in opened["alerts"] if a["host_id"] == "down-host"] == [], "OFFLINE notifies nobody"
    yield call_until(dashboard, "nerve.snapshot", lambda snap: snap["hosts"]["down-host"]["level"] == "OFFLINE",
                     message="OFFLINE as the host's level")


@pytest_twisted.inlineCallbacks
def test_an_orchestrator_started_after_hosts_left_lists_them_down_and_offline(tmp_path):
    # A router of the test's own: the session's orchestrator is shared by every test and stays up.
    router = RouterProcess(tmp_path / "router").start()
    processes = [ComponentProcess(router, "alerts", "--data-dir", str(tmp_path / "alerts"))]
    try:
        orchestrator = ComponentProcess(router, "orchestrator")
        killed = ComponentProcess(router, "tracker", "--host-id", "gone-host", "--interval", "0.5")
        stopped = ComponentProcess(router, "tracker", "--host-id", "left-host", "--interval", "0.5")
        processes += [orchestrator, killed, stopped]
        watcher = yield join(router.rawsocket_url, "operator", "gone-watch", router.ticket("operator", "gone-watch"))
        yield active_keeper(watcher)
        yield call_until(watcher, "nerve.snapshot", lambda snap: {"gone-host", "left-host"} <= set(snap["hosts"]),
                         timeout=FIRST_MEASUREMENT_SECONDS, message="both trackers' first measurements")
        killed.kill()
        assert stopped.stop() == 0  # SIGTERM: the tracker says goodbye
        yield call_until(watcher, "nerve.alerts.open", lambda opened: opened["offline"] == ["left-host"] and any(
            (alert["host_id"], alert["level"]) == ("gone-host", "DOWN") for alert in opened["alerts"]),
            timeout=10, message="one host DOWN and one OFFLINE at the keeper")
        orchestrator.kill()
        processes.append(ComponentProcess(router, "orchestrator"))
        snapshot = yield call_until(watcher, "nerve.snapshot",
                                    lambda snap: {"gone-host", "left-host"} <= set(snap["hosts"]),
                                    timeout=FIRST_MEASUREMENT_SECONDS, message="the new orchestrator listing both hosts")
        entries = {host_id: snapshot["hosts"][host_id] for host_id in ("gone-host", "left-host")}
        assert {host_id: (entry["level"], entry["stale"], entry["ts"]) for host_id, entry in entries.items()} == {
            "gone-host": ("DOWN", True, None), "left-host": ("OFFLINE", True, None)}, entries
        yield watcher.leave()
    finally:
        for process in processes:
            process.stop()
        router.stop()


@pytest_twisted.inlineCallbacks
def test_a_hung_tracker_whose_session_stays_open_is_down_after_down_after_and_up_once_it_measures(tmp_path):
    # SIGSTOP keeps the tracker's connection open (its kernel still answers TCP), as a hung process or a machine that
    # dies without closing it does: only its silence tells. A router of the test's own, for --down-after.
    router = RouterProcess(tmp_path / "router").start()
    processes = [ComponentProcess(router, "alerts", "--data-dir", str(tmp_path / "alerts")),
                 ComponentProcess(router, "orchestrator", "--down-after", "5")]
    try:
        tracker = ComponentProcess(router, "tracker", "--host-id", "hung-host", "--interval", "0.5")
        processes.append(tracker)
        watcher = yield join(router.rawsocket_url, "operator", "hung-watch", router.ticket("operator", "hung-watch"))
        yield active_keeper(watcher)
        host_events = EventLog()
        yield watcher.subscribe(host_events, "nerve.alert.hung-host")
        yield call_until(watcher, "nerve.snapshot", lambda snap: "hung-host" in snap["hosts"],
                         timeout=FIRST_MEASUREMENT_SECONDS, message="the tracker's first measurement")
        tracker.process.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        yield wait_until(lambda: any(event.get("level") == "DOWN" for event in host_events.payloads()), timeout=15,
                         message="the silent host DOWN")
        took = time.monotonic() - stopped_at
        assert 4.5 < took < 8, f"DOWN {took:.1f} s after the last measurement, --down-after 5"
        opened = yield watcher.call("nerve.alerts.open")
        hung = [(alert["metric"], alert["level"]) for alert in opened["alerts"] if alert["host_id"] == "hung-host"]
        assert hung == [("host", "DOWN")]
        yield call_until(watcher, "nerve.snapshot", lambda snap: snap["hosts"]["hung-host"]["level"] == "DOWN",
                         message="DOWN as the host's level in the snapshot")
        # A keeper restarted meanwhile finds the tracker's session open, and asks the orchestrator who is silent.
        assert processes[0].stop() == 0
        processes.append(ComponentProcess(router, "alerts", "--data-dir", str(tmp_path / "alerts")))
        yield active_keeper(watcher)  # it took over: an UP of its reconciling would have come before this answer
        assert [event.get("level") for event in host_events.payloads()] == ["DOWN"], host_events.payloads()
        opened = yield watcher.call("nerve.alerts.open")
        assert [(a["host_id"], a["level"]) for a in opened["alerts"]] == [("hung-host", "DOWN")]
        tracker.process.send_signal(signal.SIGCONT)
        yield wait_until(lambda: host_events.payloads()[-1].get("level") == "UP", timeout=10,
                         message="the host UP once it measures again")
        opened = yield watcher.call("nerve.alerts.open")
        assert [a for a in opened["alerts"] if a["host_id"] == "hung-host"] == [], "the DOWN alert resolved"
        yield watcher.leave()
    finally:
        for process in processes:
            if process.process.poll() is None:
                process.process.send_signal(signal.SIGCONT)
            process.stop()
        router.stop()


@pytest_twisted.inlineCallbacks
def test_a_tracker_whose_boot_time_moved_between_sessions_raises_a_reboot_alert(router, start, dashboard,
                                                                               operator_session, tmp_path):
    start_keeper(start, tmp_path)
    yield active_keeper(operator_session)
    events = EventLog()
    yield dashboard.subscribe(events, "nerve.alert.boot-host", options=SubscribeOptions(details_arg="details"))
    for boot_time in (1000.0, 9000.0):
        tracker = yield join(router.rawsocket_url, "tracker", "boot-host", router.ticket("tracker", "boot-host"))
        measurement = {"host_id": "boot-host", "hostname": "boot-host", "run": "r", "seq": 1, "ts": time.time(),
                       "interval": 1.0, "metrics": {"cpu": 1.0}, "boot_time": boot_time}
        # The keeper subscribes to the host's measurements when its tracker joins: publish until it has read one.
        read_before = (yield operator_session.call("nerve.alerts.stats")).get("boot_times_read", 0)
        for _ in range(50):
            tracker.publish("nerve.measure.boot-host", measurement)
            stats = yield operator_session.call("nerve.alerts.stats")
            if stats.get("boot_times_read", 0) > read_before:
                break
            yield sleep(0.1)
        else:
            raise AssertionError("the keeper never read the tracker's boot time")
        yield tracker.leave()
    yield wait_until(lambda: any(event.get("level") == "REBOOT" for event in events.payloads()), timeout=5,
                     message="the REBOOT alert")
    [reboot] = [event for event in events.payloads() if event.get("level") == "REBOOT"]
    assert (reboot["metric"], reboot["value"]) == ("boot", 9000.0)


@pytest_twisted.inlineCallbacks
def test_a_client_asking_for_its_role_in_hello_joins_with_the_ticket_nerve_credential_prints(router):
    result = subprocess.run([sys.executable, "-m", "components", "credential", "operator", "hello-alice",
                             "--secrets-file", str(router.secrets_file)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    ticket = result.stdout.strip()
    assert ticket == router.ticket("operator", "hello-alice")

    # The standard WAMP way: HELLO's authrole, nothing in authextra.
    component = Component(transports=[{"url": router.websocket_url, "type": "websocket", "serializers": ["json"],
                                       "max_retries": 0}], realm="nerve",
                          authentication={"ticket": {"authid": "hello-alice", "ticket": ticket, "authrole": "operator"}})
    joined = defer.Deferred()
    component.on("join", lambda session, details: joined.called or joined.callback((session, details)))
    component.on("leave", lambda session, details: joined.called or joined.errback(RuntimeError(details.reason)))
    component.start(reactor)
    session, details = yield joined
    assert details.authrole == "operator"
    listing = yield session.call("nerve.mesh.sessions")
    assert [record["authrole"] for record in listing["sessions"] if record["authid"] == "hello-alice"] == ["operator"]
    # The role it asked for lets it act on alerts (a keeper need not run: the router checks the role first).
    yield session.leave()


@pytest_twisted.inlineCallbacks
def test_of_two_keepers_one_is_active_and_the_standby_takes_over_with_the_acks(router, start, dashboard,
                                                                              operator_session, tmp_path):
    first = start_keeper(start, tmp_path / "first")
    yield active_keeper(operator_session)
    start_keeper(start, tmp_path / "second")  # another machine's keeper: its own store
    yield call_until(dashboard, "wamp.registration.count_callees", lambda count: count == 2,
                     (yield dashboard.call("wamp.registration.lookup", "nerve.alerts.open", {"match": "exact"})),
                     timeout=20, message="both keepers registered")
    changes = EventLog()
    yield dashboard.subscribe(changes, "nerve.alerts.changed", options=SubscribeOptions(details_arg="details"))
    yield operator_session.publish("nerve.alert.two-keepers", level_event("two-keepers"),
                                   options=PublishOptions(acknowledge=True))
    yield wait_until(lambda: [e for e in changes.payloads() if e["host_id"] == "two-keepers"], message="the record")
    [record] = [e for e in changes.payloads() if e["host_id"] == "two-keepers"]
    acked = yield operator_session.call("nerve.alert.ack", record["id"], comment="mine")
    assert acked["acked_by"] == "test-operator"
    yield wait_until(lambda: len([e for e in changes.payloads() if e["host_id"] == "two-keepers"]) == 2)
    first.kill()
    # The standby takes over within a second and knows the ack it only saw published.
    opened = yield call_until(operator_session, "nerve.alerts.open",
                              lambda answer: any(a["id"] == record["id"] for a in answer["alerts"]), timeout=5)
    [alert] = [a for a in opened["alerts"] if a["id"] == record["id"]]
    assert (alert["state"], alert["acked_by"], alert["ack_comment"]) == ("acknowledged", "test-operator", "mine")
    yield active_keeper(operator_session)
    # Exactly one record per change was published while both ran: nothing twice.
    assert len([e for e in changes.payloads() if e["host_id"] == "two-keepers"]) == 2
