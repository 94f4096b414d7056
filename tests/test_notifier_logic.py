"""The notifier's config, routing rules, outbox and sending logic, by plain calls (no router, no servers)."""

import json
from pathlib import Path

import pytest
from twisted.internet import defer

from components.mesh.config import MeshConfig
from components.mesh.errors import ConfigError
from components.notify.channels import DeliveryError, alertmanager_body, email_message, webhook_body
from components.notify.config import Route, load_notifier_config
from components.notify.notifier import DELIVERED_TOPIC, Notifier
from components.notify.outbox import Outbox
from components.notify.routing import Thread, dedup_key, plan, plan_repeats
from components.testing import FakeMesh

ROOT = Path(__file__).resolve().parents[1]
MESH = MeshConfig(role="notifier", authid="notifier-test", ticket="unused")


def record(host="web-01", metric="cpu", level="HIGH", status="firing", state=None, opened=1000.0, updated=None,
           previous="LOW", **extra):
    """An alert record as the keeper publishes it on nerve.alerts.changed."""
    return dict({"id": f"{host}/{metric}/{int(opened * 1000)}", "host_id": host, "hostname": host, "metric": metric,
                 "level": level, "previous": previous, "value": 97.5, "ts": updated or opened, "opened_at": opened,
                 "status": status, "state": state or status, "acked_by": None, "silenced_by": None,
                 "resolved_at": (updated or opened) if status == "resolved" else None,
                 "updated_at": updated or opened, "url": f"/#host={host}"}, **extra)


def write(tmp_path, text, name="notify.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def load(path, **env):
    return load_notifier_config(path, MESH, data_dir=str(Path(path).parent / "data"), environ=env)


# -- config ------------------------------------------------------------------------------
def documented_example(tmp_path):
    """The complete config of docs/alerts.md's Notifications section, as a file."""
    text = (ROOT / "docs" / "alerts.md").read_text()
    section = text[text.index("## Notifications"):]
    return write(tmp_path, section.split("```toml\n", 1)[1].split("```", 1)[0])


def test_the_documented_example_config_loads(tmp_path):
    config = load(documented_example(tmp_path), NERVE_SMTP_PASSWORD="s3cret")
    assert set(config.channels) == {"ops-webhook", "oncall-mail", "alertmanager"}
    mail = config.channels["oncall-mail"]
    assert (mail.host, mail.port, mail.starttls, mail.username, mail.password) == \
        ("mail.example.org", 587, True, "nerve", "s3cret")
    assert "s3cret" not in repr(mail)
    assert config.routes[1].repeat_interval == 7200 and config.routes[0].group_wait == 5
    assert config.routes[2].send_resolved is False and config.max_retry_delay == 30
    assert config.channels["alertmanager"].alerts_url == "http://127.0.0.1:9093/api/v2/alerts"


def test_defaults_and_no_routes_mean_every_alert_to_every_channel(tmp_path):
    config = load(write(tmp_path, '[channels.a]\ntype = "webhook"\nurl = "http://h/a"\n'
                                  '[channels.b]\ntype = "alertmanager"\nurl = "http://h:9093/"\n'))
    (route,) = config.routes
    assert route.channels == ("a", "b") and route.group_wait == 10 and route.repeat_interval == 4 * 3600
    assert route.send_resolved is True and route.matches(record(host="anything", metric="mem", level="MEDIUM"))
    assert config.link("/#host=x") == "http://127.0.0.1:8080/#host=x"


BAD_CONFIGS = [
    # (file text, line, field, words of the message)
    ('[channels.hook]\ntype = "webhook"\n', 1, "channels.hook.url", "missing"),
    ('[channels.hook]\ntype = "webhook"\nurl = "ftp://x/"\n', 3, "channels.hook.url", "http"),
    ('[channels.hook]\ntype = "pager"\n', 2, "channels.hook.type", "webhook, email, alertmanager"),
    ('[channels.hook]\ntype = "webhook"\nurl = "http://h/"\nurll = 1\n', 4, "channels.hook.urll", "unknown field"),
    ('dashboard_url = "x"\n[channels.h]\ntype = "webhook"\nurl = "http://h/"\n', 1, "dashboard_url", "http"),
    ('\n[channels.m]\ntype = "email"\nsmtp = "mail.example.org"\nfrom = "a@b"\nto = ["c@d"]\n', 4,
     "channels.m.smtp", "host:port"),
    ('[channels.m]\ntype = "email"\nsmtp = "m:25"\nfrom = "a@b"\nto = ["c@d"]\nusername = "u"\n'
     'password_env = "NOT_SET_ANYWHERE"\n', 7, "channels.m.password_env", "NOT_SET_ANYWHERE is not set"),
    ('[channels.m]\ntype = "email"\nsmtp = "m:25"\nfrom = "a@b"\nto = ["c@d", "nobody"]\n', 5, "channels.m.to",
     "addresses"),
    ('[channels.h]\ntype = "webhook"\nurl = "http://h/"\n\n[[routes]]\nchannels = ["h"]\n\n[[routes]]\n'
     'channels = ["h", "pager"]\n', 9, "routes[1].channels", "no channel 'pager'"),
    ('[channels.h]\ntype = "webhook"\nurl = "http://h/"\n[[routes]]\nchannels = ["h"]\nlevels = ["HIGH", "LOUD"]\n',
     6, "routes[0].levels", "'LOUD'"),
    ('[channels.h]\ntype = "webhook"\nurl = "http://h/"\n[[routes]]\nchannels = ["h"]\ngroup_wait = "soon"\n', 6,
     "routes[0].group_wait", "duration"),
    ('[channels.h]\ntype = "webhook"\nurl = "http://h/"\n[[routes]]\nhosts = "web-*"\n', 4, "routes[0].channels",
     "missing"),
    ('[channels.h]\ntype = "webhook"\nurl = "http://h/"\n[[routes]]\nchannels = ["h"]\nsend_resolved = "yes"\n', 6,
     "routes[0].send_resolved", "true or false"),
    ('dashboard_url = "http://x/"\n', 1, "channels", "at least one channel"),
]


@pytest.mark.parametrize("text, line, field, words", BAD_CONFIGS)
def test_a_bad_config_names_file_line_and_field(tmp_path, text, line, field, words):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load(path)
    message = str(raised.value)
    assert message.startswith(f"{path}:{line}: field {field}: "), message
    assert words in message


def test_a_syntax_error_names_its_line(tmp_path):
    path = write(tmp_path, '[channels.h]\ntype = "webhook"\nurl = http://h/\n')
    with pytest.raises(ConfigError, match=rf"^{path}:3: TOML syntax: "):
        load(path)


# -- routing ---------------------------------------------------------------------------
ROUTES = (Route(channels=("hook",), hosts=("web-*",), group_wait=0),
          Route(channels=("mail", "hook"), levels=("HIGH", "DOWN"), group_wait=10, repeat_interval=60))


def test_a_firing_alert_goes_to_the_channels_of_every_matching_route():
    threads = {}
    due = plan(record(), threads, ROUTES, now=1000)
    assert {(n.channel, n.key, n.group_wait) for n in due} == {
        ("hook", dedup_key("web-01/cpu/1000000", "firing", 0), 0), ("mail", "web-01/cpu/1000000|firing|0", 10)}
    assert threads["hook"].route == 0 and threads["mail"].route == 1
    assert plan(record(host="db-01", level="MEDIUM"), {}, ROUTES, now=1000) == []  # neither route matches


def test_level_changes_repeats_acks_silences_and_resolutions():
    threads = {}
    plan(record(), threads, ROUTES, now=1000)
    assert plan(record(updated=1001, value=99), threads, ROUTES, now=1001) == []  # same level: nothing new
    acked = record(updated=1002, state="acknowledged", acked_by="ann")
    assert plan(acked, threads, ROUTES, now=1002) == [] and plan_repeats(acked, threads, ROUTES, now=5000) == []
    repeats = plan_repeats(record(), threads, ROUTES, now=1060)
    assert [(n.channel, n.repeat) for n in repeats] == [("mail", 1)]  # hook's route repeats after 4 h
    down = plan(record(level="DOWN", previous="HIGH", updated=1070), threads, ROUTES, now=1070)
    assert [(n.channel, n.repeat) for n in down] == [("hook", 1), ("mail", 2)]  # a new level: a new notification
    resolved = plan(record(status="resolved", level="LOW", updated=1080), threads, ROUTES, now=1080)
    assert {(n.channel, n.key, n.record["level"], n.record["resolved_as"]) for n in resolved} == {
        ("hook", "web-01/cpu/1000000|resolved|0", "DOWN", "LOW"), ("mail", "web-01/cpu/1000000|resolved|0", "DOWN", "LOW")}
    assert plan(record(status="resolved", updated=1081), threads, ROUTES, now=1081) == []


def test_a_silenced_alert_notifies_nobody_even_when_it_resolves():
    threads = {}
    assert plan(record(state="silenced", silenced_by="s1"), threads, ROUTES, now=1000) == []
    assert plan(record(status="resolved", updated=1010), threads, ROUTES, now=1010) == []
    assert plan(record(level="OFFLINE", metric="host"), {}, ROUTES, now=1000) == []


def test_an_alert_that_fired_and_resolved_unheard_is_notified_late_as_both():
    threads = {}
    due = plan(record(status="resolved", level="LOW", previous="HIGH", updated=1010), threads, ROUTES, now=1020)
    assert [(n.channel, n.status, n.record["level"]) for n in due] == [
        ("hook", "firing", "HIGH"), ("mail", "firing", "HIGH"), ("hook", "resolved", "HIGH"), ("mail", "resolved", "HIGH")]
    assert plan(record(status="resolved", level="LOW", previous="HIGH", updated=1011), threads, ROUTES, now=1021) == []
    quiet = record(status="resolved", level="LOW", previous="HIGH", silenced_by="s1")
    assert plan(quiet, {}, ROUTES, now=1020) == []
    assert plan(record(status="resolved", level="LOW", previous="HIGH", acked_by="ann"), {}, ROUTES, now=1020) == []


def test_send_resolved_false_keeps_the_resolution_quiet():
    routes = (Route(channels=("hook",), send_resolved=False),)
    threads = {"hook": Thread("hook", 0, 0, "HIGH", 1000.0)}
    assert plan(record(status="resolved", updated=1010), threads, routes, now=1010) == []


# -- outbox ----------------------------------------------------------------------------
def test_group_wait_gathers_one_hosts_alerts_into_one_message(tmp_path):
    outbox = Outbox(tmp_path / "o.sqlite3")
    routes = (Route(channels=("hook",), group_wait=10),)
    outbox.apply([record(metric="cpu")], routes, now=1000)
    outbox.apply([record(metric="mem", opened=1004)], routes, now=1004)
    outbox.apply([record(host="web-02")], routes, now=1005)
    assert outbox.due_groups("hook", now=1009.9, limit=10) == []
    groups = outbox.due_groups("hook", now=1010, limit=10)
    assert [[n.alert_id for n in group] for group in groups] == [["web-01/cpu/1000000", "web-01/mem/1004000"]]
    assert [n.host_id for group in outbox.due_groups("hook", now=1015, limit=10) for n in group] == \
        ["web-01", "web-01", "web-02"]


def test_two_notifiers_sharing_an_outbox_queue_a_record_once_and_old_versions_change_nothing(tmp_path):
    first, second = Outbox(tmp_path / "o.sqlite3"), Outbox(tmp_path / "o.sqlite3")
    routes = (Route(channels=("hook",), group_wait=0),)
    assert len(first.apply([record(updated=1000)], routes, now=1000)) == 1
    assert len(second.apply([record(updated=1000)], routes, now=1000)) == 0  # the thread exists: nothing new
    first.apply([record(status="resolved", updated=1010)], routes, now=1010)
    assert second.apply([record(updated=1005, level="MEDIUM")], routes, now=1011) == []  # older than the stored one
    assert first.pending() == {"hook": 2}
    groups = second.due_groups("hook", now=1011, limit=5)
    assert second.delivered({"hook": [n.key for g in groups for n in g]}, at=1012) == 2
    assert first.pending() == {}


# -- formats ---------------------------------------------------------------------------
def test_message_formats_carry_the_keys_and_absolute_links(tmp_path):
    config = load(write(tmp_path, 'dashboard_url = "https://nerve.example/"\n'
                                  '[channels.h]\ntype = "webhook"\nurl = "http://h/"\n'))
    outbox = Outbox(tmp_path / "o.sqlite3")
    routes = (Route(channels=("h",), group_wait=0),)
    outbox.apply([record(level="HIGH", previous="MEDIUM")], routes, now=1000)
    (group,) = outbox.due_groups("h", now=1000, limit=1)
    body = webhook_body(config.channels["h"], group, config)
    (alert,) = body["alerts"]
    assert alert["key"] == "web-01/cpu/1000000|firing|0" and alert["url"] == "https://nerve.example/#host=web-01"
    assert {name: alert[name] for name in ("id", "host_id", "metric", "level", "previous", "value", "ts", "status")} == {
        "id": "web-01/cpu/1000000", "host_id": "web-01", "metric": "cpu", "level": "HIGH", "previous": "MEDIUM",
        "value": 97.5, "ts": 1000.0, "status": "firing"}
    ended, firing = alertmanager_body(group, config, lambda notification: 3600)
    assert firing["labels"] == {"alertname": "nerve_cpu", "host": "web-01", "metric": "cpu", "level": "HIGH"}
    assert ended["labels"]["level"] == "MEDIUM" and ended["endsAt"] < firing["endsAt"]
    assert firing["generatorURL"] == "https://nerve.example/#host=web-01" and firing["startsAt"].endswith("Z")
    config_mail = load(write(tmp_path, '[channels.m]\ntype = "email"\nsmtp = "m:25"\nfrom = "n@x"\nto = ["a@x", "b@x"]\n',
                             name="mail.toml"))
    mail = email_message(config_mail.channels["m"], group, config_mail).decode()
    assert "Subject: [nerve] FIRING 1 web-01: cpu HIGH" in mail and "To: a@x, b@x" in mail
    assert "X-Nerve-Keys: web-01/cpu/1000000|firing|0" in mail and "http://127.0.0.1:8080/#host=web-01" in mail


# -- sending ---------------------------------------------------------------------------
class FakeSenders:
    """Channels that take messages or refuse them, by name, recording what they took."""

    def __init__(self):
        self.down = set()
        self.taken = []

    def send(self, channel, group, repeat_interval_of):
        if channel.name in self.down:
            return defer.fail(DeliveryError(f"{channel.name} is down"))
        self.taken.extend((channel.name, notification.key) for notification in group)
        return defer.succeed(200)


@pytest.fixture
def leader(tmp_path):
    config = load(write(tmp_path, '[channels.a]\ntype = "webhook"\nurl = "http://h/a"\n'
                                  '[channels.b]\ntype = "webhook"\nurl = "http://h/b"\n'
                                  '[[routes]]\nchannels = ["a", "b"]\ngroup_wait = 0\n'))
    fake = FakeMesh(config)
    senders = FakeSenders()
    notifier = Notifier(config, fake.mesh, clock=fake.clock.seconds, scheduler=fake.clock, senders=senders,
                        outbox=Outbox(config.outbox_path))
    fake.bind(notifier)
    notifier.active = True  # the router's word on leadership is tested against a real router
    yield fake, notifier, senders
    notifier.outbox.close()


def test_a_down_channel_does_not_hold_the_others_and_gets_everything_once_when_back(leader):
    fake, notifier, senders = leader
    senders.down.add("a")
    for host in range(5):
        fake.deliver("nerve.alerts.changed", record(host=f"web-{host}"))
    fake.advance(0.1)
    assert sorted(key for name, key in senders.taken if name == "b") == sorted(
        f"web-{host}/cpu/1000000|firing|0" for host in range(5))
    fake.advance(60)
    stats = fake.call("nerve.notifier.stats")
    assert stats["channels"]["a"]["state"] == "unreachable" and stats["channels"]["a"]["pending"] == 5
    assert "a is down" in stats["channels"]["a"]["last_error"]
    assert 5 <= stats["channels"]["a"]["failed"] <= 8  # one probe per backoff step (1, 2, 4, ... capped at 30 s)
    senders.down.clear()
    fake.advance(31)
    taken_a = [key for name, key in senders.taken if name == "a"]
    assert sorted(taken_a) == sorted(f"web-{host}/cpu/1000000|firing|0" for host in range(5))
    stats = fake.call("nerve.notifier.stats")
    assert stats["channels"]["a"]["state"] == "ok" and stats["channels"]["a"]["pending"] == 0
    assert stats["channels"]["a"]["sent"] == 5 and stats["channels"]["b"]["sent"] == 5
    assert sorted(key for event in fake.published_on(DELIVERED_TOPIC) for key in event["keys"]) == sorted(
        key for _, key in senders.taken)


def test_a_sync_asks_what_resolved_since_the_last_record_stored_and_notifies_it_late(leader):
    fake, notifier, senders = leader
    asked = []
    missed = record(host="web-9", status="resolved", level="LOW", previous="HIGH", opened=1001, updated=1005)
    fake.answer("nerve.alerts.open", lambda since=None: asked.append(since) or (
        {"alerts": []} if since is None else {"alerts": [record(updated=1000)], "resolved": [missed]}))
    notifier.sync()
    assert asked == [None]  # nothing stored yet: a first start does not page about history
    fake.deliver("nerve.alerts.changed", record(updated=1000))
    fake.advance(0.1)
    notifier.sync()
    fake.advance(0.1)
    assert asked[-1] == 1000 - 10
    assert sorted(key for name, key in senders.taken if name == "a") == [
        "web-01/cpu/1000000|firing|0", "web-9/cpu/1001000|firing|0", "web-9/cpu/1001000|resolved|0"]


def test_a_malformed_record_is_counted_and_dropped(leader):
    fake, notifier, senders = leader
    fake.deliver("nerve.alerts.changed", {"id": "x", "status": "maybe"})
    assert sum(fake.mesh.dropped.values()) == 1 and senders.taken == []


def test_a_standby_marks_what_the_leader_delivered(leader, tmp_path):
    fake, notifier, senders = leader
    notifier.active = False
    fake.deliver("nerve.alerts.changed", record())
    fake.advance(0)  # the records of a reactor turn are applied at its end
    fake.deliver(DELIVERED_TOPIC, {"channel": "a", "keys": ["web-01/cpu/1000000|firing|0"], "at": 1.0})
    assert notifier.outbox.pending() == {"b": 1}
    assert json.loads(json.dumps(fake.call("nerve.notifier.stats")))["leader"] is False
    # A record and the leader's word that it was delivered, read in one reactor turn (a standby under load reads
    # many messages at once): the mark finds the record stored, so a takeover does not send it again.
    fake.deliver("nerve.alerts.changed", record(host="web-02"))
    fake.deliver(DELIVERED_TOPIC, {"channel": "a", "keys": ["web-02/cpu/1000000|firing|0"], "at": 1.0})
    fake.advance(0)
    assert notifier.outbox.pending() == {"b": 2}
