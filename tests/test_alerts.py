"""The alert lifecycle and the keeper with plain calls: episodes, acks, silences, validation, host presence, restarts."""

import subprocess
import sys

import pytest

from components import InvalidArgument, NotFound, Unavailable
from components.alerts.keeper import AlertKeeper, KeeperConfig
from components.alerts.lifecycle import AlertBook, checked_matchers
from components.mesh.config import MeshConfig
from components.testing import FakeMesh

NOW = 1_765_000_000.0


def level(host, metric, new, previous="LOW", ts=NOW, value=90.0):
    return {"host_id": host, "hostname": host, "metric": metric, "previous": previous, "level": new, "ts": ts,
            "seq": 1, "value": value}


def test_an_episode_opens_on_leaving_low_changes_level_in_place_and_resolves_back_at_low():
    book = AlertBook()
    [opened] = book.apply_event(level("web-01", "cpu", "MEDIUM"), NOW)
    assert opened["id"] == f"web-01/cpu/{int(NOW * 1000)}"
    assert (opened["status"], opened["state"], opened["opened_at"]) == ("firing", "firing", NOW)
    [raised] = book.apply_event(level("web-01", "cpu", "HIGH", "MEDIUM", ts=NOW + 5), NOW + 5)
    assert raised["id"] == opened["id"] and (raised["level"], raised["previous"]) == ("HIGH", "MEDIUM")
    assert book.apply_event(level("web-01", "cpu", "HIGH", "HIGH", ts=NOW + 6), NOW + 6) == []
    [resolved] = book.apply_event(level("web-01", "cpu", "LOW", "HIGH", ts=NOW + 9), NOW + 9)
    assert (resolved["status"], resolved["state"], resolved["resolved_at"]) == ("resolved", "resolved", NOW + 9)
    assert book.open_alerts() == []
    [again] = book.apply_event(level("web-01", "cpu", "MEDIUM", ts=NOW + 20), NOW + 20)
    assert again["id"] != opened["id"], "a new episode is a new alert"


def test_the_keeper_tells_a_late_listener_what_resolved_since_it_last_heard(tmp_path):
    keeper = AlertKeeper(KeeperConfig(mesh=MeshConfig(role="alerts"), data_dir=tmp_path), FakeMesh().mesh,
                         clock=lambda: NOW)
    keeper.book.apply_event(level("web-01", "cpu", "HIGH"), NOW)
    keeper.book.apply_event(level("web-01", "cpu", "LOW", "HIGH", ts=NOW + 5), NOW + 5)
    keeper.book.apply_event(level("web-02", "mem", "MEDIUM", ts=NOW + 6), NOW + 6)
    assert "resolved" not in keeper.alerts_open()
    answer = keeper.alerts_open(since=NOW + 1)
    assert [record["host_id"] for record in answer["alerts"]] == ["web-02"]
    assert [(record["host_id"], record["previous"]) for record in answer["resolved"]] == [("web-01", "HIGH")]
    assert keeper.alerts_open(since=NOW + 10)["resolved"] == []
    with pytest.raises(InvalidArgument, match="since must be epoch seconds"):
        keeper.alerts_open(since="yesterday")


def test_free_form_alerts_have_no_lifecycle_and_malformed_level_events_name_the_field():
    book = AlertBook()
    assert book.apply_event({"message": "deploying", "ts": NOW, "sender": "ops"}, NOW) == []
    with pytest.raises(InvalidArgument, match="'level'"):
        book.apply_event(level("web-01", "cpu", "SEVERE"), NOW)
    with pytest.raises(InvalidArgument, match="'host_id'"):
        book.apply_event(level("Web 01!", "cpu", "HIGH"), NOW)


def test_ack_keeps_the_alert_firing_and_records_who_when_and_why():
    book = AlertBook()
    [record] = book.apply_event(level("web-01", "mem", "HIGH"), NOW)
    acked = book.ack(record["id"], "alice", "on it", NOW + 3)
    assert (acked["status"], acked["state"], acked["acked_by"], acked["acked_at"], acked["ack_comment"]) == \
        ("firing", "acknowledged", "alice", NOW + 3, "on it")
    with pytest.raises(NotFound, match="alert_id 'nope'"):
        book.ack("nope", "alice", "", NOW)
    with pytest.raises(InvalidArgument, match="comment is 1001 characters"):
        book.ack(record["id"], "alice", "x" * 1001, NOW)
    book.apply_event(level("web-01", "mem", "LOW", "HIGH", ts=NOW + 4), NOW + 4)
    with pytest.raises(InvalidArgument, match="resolved"):
        book.ack(record["id"], "alice", "", NOW + 5)


def test_a_silence_marks_matching_alerts_by_host_glob_and_metric_family_and_wins_over_an_ack():
    book = AlertBook()
    web = book.apply_event(level("web-01", "cpu_core.3", "HIGH"), NOW)[0]
    db = book.apply_event(level("db-01", "cpu_core.3", "HIGH"), NOW)[0]
    book.ack(web["id"], "alice", "", NOW)
    silence, changed = book.create_silence({"host": "web-*", "metric": "cpu_core"}, "bob", NOW + 1, duration=60)
    assert silence["state"] == "active" and silence["created_by"] == "bob" and silence["ends_at"] == NOW + 61
    assert [(record["id"], record["state"], record["silenced_by"]) for record in changed] == \
        [(web["id"], "silenced", silence["id"])]
    # A new alert that matches is silenced from birth; one that does not is not.
    assert book.apply_event(level("web-02", "cpu_core.0", "MEDIUM"), NOW + 2)[0]["state"] == "silenced"
    assert book.apply_event(level("web-02", "mem", "MEDIUM"), NOW + 2)[0]["state"] == "firing"
    assert book.open_of("db-01", "cpu_core.3")["state"] == "firing" and db["silenced_by"] is None
    silences, changed = book.tick(NOW + 61)
    assert [item["state"] for item in silences] == ["expired"]
    states = {record["host_id"]: record["state"] for record in changed}
    assert states == {"web-01": "acknowledged", "web-02": "firing"}


def test_maintenance_windows_start_later_and_open_ended_silences_end_when_their_alerts_resolve():
    book = AlertBook()
    record = book.apply_event(level("web-01", "cpu", "HIGH"), NOW)[0]
    window, changed = book.create_silence({"host": "web-01"}, "bob", NOW, starts=NOW + 100, duration=50)
    assert window["state"] == "pending" and changed == []
    silences, changed = book.tick(NOW + 100)
    assert [item["state"] for item in silences] == ["active"] and changed[0]["state"] == "silenced"
    book.expire_silence(window["id"], NOW + 101)
    until_resolved, changed = book.create_silence({"metric": "cpu"}, "bob", NOW + 102)
    assert until_resolved["ends_at"] is None and changed[0]["silenced_by"] == until_resolved["id"]
    assert book.tick(NOW + 103) == ([], [])
    book.apply_event(level("web-01", "cpu", "LOW", "HIGH", ts=NOW + 104), NOW + 104)
    silences, _ = book.tick(NOW + 105)
    assert [(item["id"], item["state"]) for item in silences] == [(until_resolved["id"], "expired")]
    assert record["id"] in book.resolved


@pytest.mark.parametrize("matchers, kwargs, message", [
    ({"host": "web-*"}, {"until": NOW - 10}, "until: .* in the past"),
    ({"host": "web-*"}, {"duration": 0}, "duration must be > 0"),
    ({"host": "web-*"}, {"duration": -5}, "duration must be > 0"),
    ({"host": "[z-a]"}, {"duration": 60}, "matchers.host: .* not a valid glob"),
    ({"host": "web-[1"}, {"duration": 60}, "matchers.host: .* not a valid glob"),
    ({"host": "WEB 01"}, {"duration": 60}, "matchers.host"),
    ({"hostname": "web"}, {"duration": 60}, "matchers: unknown key 'hostname'"),
    ({}, {"duration": 60}, "matchers must be"),
    ({"metric": "cpu usage"}, {"duration": 60}, "matchers.metric"),
    ({"host": "web-*"}, {"duration": 60, "comment": "y" * 1001}, "comment is 1001 characters"),
    ({"host": "web-*"}, {"duration": 60, "until": NOW + 60}, "either duration"),
    ({"host": "nothing-*"}, {}, "match no open alert"),
])
def test_bad_silences_are_refused_naming_the_field(matchers, kwargs, message):
    book = AlertBook()
    book.apply_event(level("web-01", "cpu", "HIGH"), NOW)
    with pytest.raises(InvalidArgument, match=message):
        book.create_silence(matchers, "bob", NOW, **kwargs)
    assert book.current_silences() == []


def test_matchers_keep_only_what_was_given():
    assert checked_matchers({"host": "web-0?", "metric": None}) == {"host": "web-0?"}


def make_keeper(tmp_path):
    config = KeeperConfig(mesh=MeshConfig(role="alerts", authid="alerts"), data_dir=tmp_path, reboot_hold=30)
    fake = FakeMesh(config)
    clock = [NOW]
    keeper = AlertKeeper(config, fake.mesh, clock=lambda: clock[0])
    fake.bind(keeper)
    keeper.active = True
    return fake, keeper, clock


def tracker_event(host, session, **more):
    return dict({"session": session, "authid": host, "authrole": "tracker"}, **more)


def test_a_tracker_lost_without_goodbye_is_down_one_that_said_goodbye_is_offline_and_both_come_back(tmp_path):
    fake, keeper, clock = make_keeper(tmp_path)
    fake.deliver("nerve.mesh.joined", tracker_event("web-01", 1))
    fake.deliver("nerve.mesh.joined", tracker_event("web-02", 2))
    fake.deliver("nerve.mesh.left", tracker_event("web-01", 1, goodbye=False))
    [down] = fake.published_on("nerve.alert.web-01")
    assert (down["metric"], down["level"], down["previous"]) == ("host", "DOWN", "UP")
    [record] = fake.published_on("nerve.alerts.changed")
    assert (record["metric"], record["level"], record["status"]) == ("host", "DOWN", "firing")
    fake.deliver("nerve.mesh.left", tracker_event("web-02", 2, goodbye=True))
    [offline] = fake.published_on("nerve.alert.web-02")
    assert offline["level"] == "OFFLINE"
    assert len(fake.published_on("nerve.alerts.changed")) == 1, "OFFLINE opens no alert: nobody is notified"
    # Nor is it an open alert: nerve.alerts.open lists the OFFLINE hosts apart, for an orchestrator joining later.
    assert fake.call("nerve.alerts.open")["offline"] == ["web-02"]
    keeper.store.commit()
    restarted = AlertKeeper(keeper.config, FakeMesh(keeper.config).mesh, clock=lambda: clock[0])
    assert restarted.alerts_open()["offline"] == ["web-02"], "a keeper restart keeps who is OFFLINE"
    fake.deliver("nerve.mesh.joined", tracker_event("web-01", 3))
    assert fake.published_on("nerve.alert.web-01")[-1]["level"] == "UP"
    assert fake.published_on("nerve.alerts.changed")[-1]["status"] == "resolved"
    fake.deliver("nerve.mesh.joined", tracker_event("web-02", 4))
    assert fake.call("nerve.alerts.open")["offline"] == []
    # A simulator's session is not a host.
    fake.deliver("nerve.mesh.left", {"session": 9, "authid": "simulator", "authrole": "simulator", "goodbye": False})
    assert fake.published_on("nerve.alert.simulator") == []


def test_a_silent_host_whose_tracker_session_stays_open_is_down_until_heard(tmp_path):
    fake, keeper, clock = make_keeper(tmp_path)
    fake.deliver("nerve.mesh.joined", tracker_event("web-01", 1))
    fake.deliver("nerve.orchestrator.silence", {"ts": NOW, "silent": ["web-01", "sim-0001"], "heard": []})
    [down] = fake.published_on("nerve.alert.web-01")
    assert (down["metric"], down["level"], down["previous"]) == ("host", "DOWN", "UP")
    assert fake.published_on("nerve.alert.sim-0001") == [], "a simulator's host has no session: it only goes stale"
    [record] = fake.published_on("nerve.alerts.changed")
    assert (record["level"], record["status"]) == ("DOWN", "firing")
    keeper.reconcile_hosts()  # a takeover: the tracker's session is there, but the host is silent, not back
    assert fake.published_on("nerve.alerts.changed")[-1]["status"] == "firing"
    fake.deliver("nerve.orchestrator.silence", {"ts": NOW + 40, "silent": [], "heard": ["web-01", "sim-0001"]})
    assert [event["level"] for event in fake.published_on("nerve.alert.")] == ["DOWN", "UP"]
    assert fake.published_on("nerve.alerts.changed")[-1]["status"] == "resolved"
    # A keeper restarted while the host was silent: DOWN with its tracker's session open is DOWN for its silence.
    fake.deliver("nerve.orchestrator.silence", {"ts": NOW + 50, "silent": ["web-01"], "heard": []})
    keeper.silent.clear()
    fake.deliver("nerve.orchestrator.silence", {"ts": NOW + 60, "silent": [], "heard": ["web-01"]})
    assert [event["level"] for event in fake.published_on("nerve.alert.")] == ["DOWN", "UP", "DOWN", "UP"]
    with pytest.raises(InvalidArgument, match="the lists silent and heard"):
        keeper.on_silence({"silent": "web-01"})


def test_a_keeper_started_while_a_host_is_silent_keeps_it_down_until_heard(tmp_path):
    fake, keeper, clock = make_keeper(tmp_path)
    fake.deliver("nerve.mesh.joined", tracker_event("web-01", 1))
    fake.deliver("nerve.orchestrator.silence", {"ts": NOW, "silent": ["web-01"], "heard": []})
    keeper.store.commit()

    def restart(config):
        """A keeper on the same store, joining while web-01 is silent and its tracker's session open."""
        again = FakeMesh(config)
        again.answer("nerve.orchestrator.silent", lambda: {"ts": NOW + 10, "silent": ["web-01", "sim-0001"]})
        again.answer("nerve.mesh.sessions", lambda: {"sessions": [tracker_event("web-01", 1)]})
        restarted = AlertKeeper(config, again.mesh, clock=lambda: clock[0])
        again.bind(restarted)
        assert restarted.loaded, "it has read who is silent and connected, so it may take over"
        restarted.active = True  # the router routes nerve.alerts.leader to it: a takeover
        restarted.reconcile_hosts()
        return again, restarted

    again, restarted = restart(keeper.config)
    assert restarted.presence["web-01"] == "DOWN" and restarted.silent == {"web-01"}
    assert again.published_on("nerve.alerts.changed") == [], "the DOWN alert stays open: nothing resolved"
    assert [alert["host_id"] for alert in again.call("nerve.alerts.open")["alerts"]] == ["web-01"]
    again.deliver("nerve.orchestrator.silence", {"ts": NOW + 20, "silent": [], "heard": ["web-01"]})
    assert again.published_on("nerve.alerts.changed")[-1]["status"] == "resolved"
    # A keeper with an empty store (a new standby) that takes over opens the silent host's alert.
    fresh_config = KeeperConfig(mesh=MeshConfig(role="alerts", authid="alerts"), data_dir=tmp_path / "new")
    fresh, _ = restart(fresh_config)
    [opened] = fresh.published_on("nerve.alerts.changed")
    assert (opened["host_id"], opened["level"], opened["status"]) == ("web-01", "DOWN", "firing")


def test_a_host_with_two_tracker_sessions_is_down_only_when_the_last_one_is_lost(tmp_path):
    fake, keeper, clock = make_keeper(tmp_path)
    fake.deliver("nerve.mesh.joined", tracker_event("web-01", 1))
    fake.deliver("nerve.mesh.joined", tracker_event("web-01", 2))
    fake.deliver("nerve.mesh.left", tracker_event("web-01", 1, goodbye=False))
    assert fake.published_on("nerve.alert.") == []
    fake.deliver("nerve.mesh.left", tracker_event("web-01", 2, goodbye=False))
    assert [event["level"] for event in fake.published_on("nerve.alert.")] == ["DOWN"]


def test_a_moved_boot_time_is_a_reboot_alert_that_resolves_after_the_hold(tmp_path):
    fake, keeper, clock = make_keeper(tmp_path)
    keeper.observe_boot("web-01", 1000.0)
    keeper.observe_boot("web-01", 1001.0)  # read again: within tolerance
    assert fake.published_on("nerve.alert.") == []
    keeper.observe_boot("web-01", 5000.0)
    [reboot] = fake.published_on("nerve.alert.web-01")
    assert (reboot["metric"], reboot["level"], reboot["value"]) == ("boot", "REBOOT", 5000.0)
    clock[0] += 31
    fake.advance(1)
    assert fake.published_on("nerve.alerts.changed")[-1]["status"] == "resolved"


def test_acks_silences_and_host_boot_times_survive_a_restart(tmp_path):
    fake, keeper, clock = make_keeper(tmp_path)
    fake.deliver("nerve.alert.web-01", level("web-01", "cpu", "HIGH"))
    [record] = fake.published_on("nerve.alerts.changed")
    fake.call("nerve.alert.ack", record["id"], comment="looking")
    silence = fake.call("nerve.silence.create", {"host": "db-*"}, duration=3600)
    keeper.observe_boot("web-01", 1000.0)
    keeper.store.close()
    fake2, keeper2, _ = make_keeper(tmp_path)
    opened = fake2.call("nerve.alerts.open")
    assert [(item["id"], item["state"], item["ack_comment"]) for item in opened["alerts"]] == \
        [(record["id"], "acknowledged", "looking")]
    assert [item["id"] for item in opened["silences"]] == [silence["id"]]
    assert keeper2.boot_times == {"web-01": 1000.0}


def test_a_standby_follows_the_active_keepers_records_and_refuses_changes(tmp_path):
    fake, keeper, _ = make_keeper(tmp_path / "active")
    standby_fake, standby, _ = make_keeper(tmp_path / "standby")
    standby.active = False
    fake.deliver("nerve.alert.web-01", level("web-01", "cpu", "HIGH"))
    [record] = fake.published_on("nerve.alerts.changed")
    standby_fake.deliver("nerve.alert.web-01", level("web-01", "cpu", "HIGH"))
    assert standby_fake.published == [], "a standby applies nothing itself"
    standby_fake.deliver("nerve.alerts.changed", record)
    assert standby_fake.call("nerve.alerts.open")["alerts"] == [record]
    with pytest.raises(Unavailable, match="standby"):
        standby_fake.call("nerve.alert.ack", record["id"])
    standby_fake.deliver("nerve.alerts.changed", {"id": 5})
    assert standby_fake.mesh.dropped["nerve.alerts.changed"] == 1


def nerve_alerts(*args):
    return subprocess.run([sys.executable, "-m", "components", "alerts", *args], capture_output=True, text=True, timeout=60)


def test_the_alerts_command_refuses_a_bad_config_with_a_usage_error(tmp_path):
    assert nerve_alerts("--help").returncode == 0
    refused = nerve_alerts("--reboot-hold", "0", "--data-dir", str(tmp_path))
    assert refused.returncode == 2 and "reboot hold must be > 0" in refused.stderr
    blocking_file = tmp_path / "a-file"
    blocking_file.write_text("")
    refused = nerve_alerts("--data-dir", str(blocking_file / "data"))
    assert refused.returncode == 2 and "cannot open the alert store in" in refused.stderr, refused.stderr
