"""`nerve notifier` against a real router and real receivers: a webhook server, an SMTP server (aiosmtpd, STARTTLS
and login) and an Alertmanager (Debian prometheus-alertmanager); outages, SIGKILL and two notifiers at once."""

import subprocess
import sys
import time

import pytest
import pytest_twisted
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import SubscribeOptions
from twisted.internet import defer, threads

from components.node.tls import development_certificates
from components.testing.live import EventLog, call_until, join, publish_acknowledged, sleep, wait_until
from components.testing.receivers import ALERTMANAGER, AlertmanagerProcess, SmtpReceiver, WebhookReceiver

CHANGED = "nerve.alerts.changed"
STATS = "nerve.notifier.stats"


def record(host="web-01", metric="cpu", level="HIGH", status="firing", opened=None, **extra):
    """An alert record as the alert keeper publishes it."""
    opened = opened or time.time()
    now = time.time()
    return dict({"id": f"{host}/{metric}/{int(opened * 1000)}", "host_id": host, "hostname": host, "metric": metric,
                 "level": level, "previous": "LOW", "value": 97.5, "ts": now, "opened_at": opened, "status": status,
                 "state": status, "acked_by": None, "acked_at": None, "ack_comment": None, "silenced_by": None,
                 "resolved_at": now if status == "resolved" else None, "updated_at": now,
                 "url": f"/#host={host}"}, **extra)


@pytest.fixture
def keeper(router):
    """A session of the alert keeper's role: it may publish on nerve.alerts.changed and register nerve.alerts.*."""
    session = pytest_twisted.blockon(join(router.rawsocket_url, "alerts", "test-keeper",
                                          router.ticket("alerts", "test-keeper")))
    yield session
    if session.is_attached():
        pytest_twisted.blockon(session.leave())


@pytest.fixture
def hook():
    receiver = WebhookReceiver()
    yield receiver
    pytest_twisted.blockon(defer.maybeDeferred(receiver.down))


@pytest.fixture
def notifier(start, tmp_path):
    """Start `nerve notifier` with a config text (its data directory under tmp_path unless given)."""

    def start_notifier(text, data_dir=None, name="notify.toml", env=None):
        path = tmp_path / name
        path.write_text(text)
        return start("notifier", "--config", str(path), "--data-dir", str(data_dir or tmp_path / "data"), env=env)

    return start_notifier


def webhook_config(url, group_wait=0, **extra):
    top = "".join(f"{key} = {value}\n" for key, value in extra.items())
    return top + f'[channels.hook]\ntype = "webhook"\nurl = "{url}"\n[[routes]]\nchannels = ["hook"]\ngroup_wait = {group_wait}\n'


def leading(dashboard, timeout=20.0):
    """Wait until a notifier leads (it has synced and sends)."""
    return call_until(dashboard, STATS, lambda stats: stats["leader"], timeout=timeout, message="a leading notifier")


@pytest.mark.parametrize("command", [["notifier", "--config"], ["up", "--port", "1", "--notify"]])
def test_a_bad_config_stops_the_notifier_naming_file_line_and_field(tmp_path, command):
    path = tmp_path / "notify.toml"
    path.write_text('[channels.hook]\ntype = "webhook"\nurl = "http://127.0.0.1:9/"\n\n'
                    '[[routes]]\nchannels = ["hook"]\nrepeat_interval = "every hour"\n')
    done = subprocess.run([sys.executable, "-m", "components", *command, str(path)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert f"{path}:7: field routes[0].repeat_interval: " in done.stderr, done.stderr


@pytest_twisted.inlineCallbacks
def test_webhook_mail_and_alertmanager_each_receive_the_alert(router, keeper, dashboard, notifier, hook, tmp_path):
    if ALERTMANAGER is None:
        pytest.skip("prometheus-alertmanager is not installed (make test installs it)")
    tls = development_certificates(tmp_path / "tls")
    smtp = SmtpReceiver(tls=tls, login=("nerve", "mail-secret"))
    alertmanager = AlertmanagerProcess(tmp_path / "alertmanager")
    try:
        notifier(f'dashboard_url = "https://nerve.example/"\n'
                 f'[channels.hook]\ntype = "webhook"\nurl = "{hook.url}"\n'
                 f'[channels.mail]\ntype = "email"\nsmtp = "127.0.0.1:{smtp.port}"\nfrom = "nerve@example.org"\n'
                 f'to = ["oncall@example.org"]\nstarttls = true\nusername = "nerve"\npassword_env = "TEST_SMTP_PASSWORD"\n'
                 f'ca_file = "{tls.ca_certificate}"\n'
                 f'[channels.am]\ntype = "alertmanager"\nurl = "{alertmanager.url}"\n'
                 f'[[routes]]\nchannels = ["hook", "mail", "am"]\ngroup_wait = 0\n',
                 env={"TEST_SMTP_PASSWORD": "mail-secret"})
        yield leading(dashboard)
        alert = record(host="web-07", level="HIGH")
        yield publish_acknowledged(keeper, CHANGED, alert)

        yield wait_until(lambda: hook.alerts(), timeout=10, message="the webhook")
        (received,) = hook.alerts()
        assert {name: received[name] for name in ("id", "host_id", "metric", "level", "previous", "value", "status")} == {
            "id": alert["id"], "host_id": "web-07", "metric": "cpu", "level": "HIGH", "previous": "LOW", "value": 97.5,
            "status": "firing"}
        assert received["url"] == "https://nerve.example/#host=web-07" and received["key"] == f"{alert['id']}|firing|0"

        yield wait_until(lambda: smtp.mails, timeout=10, message="the mail")
        (sender, recipients, mail), = smtp.mails
        assert (sender, recipients) == ("nerve@example.org", ["oncall@example.org"])
        assert b"[nerve] FIRING 1 web-07: cpu HIGH" in mail and b"https://nerve.example/#host=web-07" in mail
        assert smtp.logins and smtp.logins[0][1:] == ("nerve", True)  # logged in, over STARTTLS

        held = yield wait_until_alertmanager(alertmanager, lambda alerts: alerts)
        (pushed,) = held
        assert {key: pushed["labels"][key] for key in ("alertname", "host", "metric", "level")} == {
            "alertname": "nerve_cpu", "host": "web-07", "metric": "cpu", "level": "HIGH"}
        assert pushed["status"]["state"] == "active" and pushed["generatorURL"] == "https://nerve.example/#host=web-07"

        yield publish_acknowledged(keeper, CHANGED, dict(alert, status="resolved", state="resolved", level="LOW",
                                                         resolved_at=time.time(), updated_at=time.time() + 0.001))
        yield wait_until(lambda: len(hook.alerts()) == 2, timeout=10, message="the resolution")
        assert hook.alerts()[1]["key"] == f"{alert['id']}|resolved|0"
        yield wait_until_alertmanager(alertmanager, lambda alerts: not [a for a in alerts if a["status"]["state"] == "active"])
        sent = lambda stats: {name: stats["channels"][name]["sent"] for name in ("hook", "mail", "am")}  # noqa: E731
        yield call_until(dashboard, STATS, lambda stats: sent(stats) == {"hook": 2, "mail": 2, "am": 2}, timeout=10)
        assert len(smtp.mails) == 2 and b"[nerve] RESOLVED web-07: cpu HIGH" in smtp.mails[1][2]
    finally:
        smtp.stop()
        alertmanager.stop()


@defer.inlineCallbacks
def wait_until_alertmanager(alertmanager, predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        alerts = yield threads.deferToThread(alertmanager.alerts)
        if predicate(alerts):
            return alerts
        if time.monotonic() > deadline:
            raise AssertionError(f"Alertmanager holds {alerts!r:.400}")
        yield sleep(0.2)


@pytest_twisted.inlineCallbacks
def test_group_wait_gathers_the_alerts_of_one_host_into_one_message(keeper, dashboard, notifier, hook):
    notifier(webhook_config(hook.url, group_wait=1.5))
    yield leading(dashboard)
    for host, metric in (("db-01", "cpu"), ("db-01", "mem"), ("db-02", "cpu"), ("db-01", "swap")):
        yield publish_acknowledged(keeper, CHANGED, record(host=host, metric=metric))
    yield wait_until(lambda: len(hook.alerts()) == 4, timeout=10, message="four alerts")
    messages = sorted((body["host_id"], sorted(alert["metric"] for alert in body["alerts"])) for _, _, body in hook.messages)
    assert messages == [("db-01", ["cpu", "mem", "swap"]), ("db-02", ["cpu"])]


@pytest_twisted.inlineCallbacks
def test_a_channel_down_is_reported_and_gets_everything_once_when_back(keeper, dashboard, notifier, hook):
    dead = WebhookReceiver()  # a second channel that stays down all along: it must not hold the first one back
    yield dead.down()
    notifier(f'max_retry_delay = 2\n[channels.hook]\ntype = "webhook"\nurl = "{hook.url}"\n'
             f'[channels.dead]\ntype = "webhook"\nurl = "{dead.url}/secret-token"\n'
             f'[[routes]]\nchannels = ["hook", "dead"]\ngroup_wait = 0\n')
    yield leading(dashboard)
    yield hook.down()
    sent = [record(host=f"app-{index}") for index in range(6)]
    for alert in sent[:3]:
        yield publish_acknowledged(keeper, CHANGED, alert)
    stats = yield call_until(dashboard, STATS, lambda stats: stats["channels"]["hook"]["state"] == "unreachable"
                             and stats["channels"]["hook"]["pending"] == 3, timeout=10)
    assert "Connection refused" in stats["channels"]["hook"]["last_error"]
    assert "secret-token" not in str(stats)  # a webhook's path can hold its credential; anonymous reads this
    hook.up()
    for alert in sent[3:]:
        yield publish_acknowledged(keeper, CHANGED, alert)
    yield wait_until(lambda: len(hook.keys()) >= 6, timeout=15, message="every alert after the outage")
    yield sleep(0.5)
    assert sorted(hook.keys()) == sorted(f"{alert['id']}|firing|0" for alert in sent)  # each once
    stats = yield dashboard.call(STATS)
    assert stats["channels"]["hook"]["state"] == "ok" and stats["channels"]["hook"]["pending"] == 0
    assert stats["channels"]["dead"]["state"] == "unreachable" and stats["channels"]["dead"]["pending"] == 6


@pytest_twisted.inlineCallbacks
def test_a_notifier_killed_with_its_outbox_full_loses_nothing(keeper, dashboard, notifier, hook, tmp_path):
    config = webhook_config(hook.url, max_retry_delay=1)
    first = notifier(config)
    yield leading(dashboard)
    yield hook.down()
    sent = [record(host=f"kill-{index}") for index in range(10)]
    for alert in sent:
        yield publish_acknowledged(keeper, CHANGED, alert)
    yield call_until(dashboard, STATS, lambda stats: stats["channels"]["hook"]["pending"] == 10, timeout=10)
    first.kill()
    hook.up()
    notifier(config)  # the same data directory: the outbox the first one left
    yield wait_until(lambda: len(hook.keys()) >= 10, timeout=20, message="the outbox after the kill")
    yield sleep(0.5)
    assert sorted(hook.keys()) == sorted(f"{alert['id']}|firing|0" for alert in sent)


@pytest_twisted.inlineCallbacks
def test_two_notifiers_deliver_each_notification_once_and_the_standby_takes_over(keeper, dashboard, notifier, hook,
                                                                                 tmp_path):
    config = webhook_config(hook.url)
    first = notifier(config, data_dir=tmp_path / "first")
    yield leading(dashboard)
    # Open before the standby starts (a minute ago): it learns them from the keeper and from the leader that they
    # were sent, so taking over does not send them again.
    early = [record(host=f"early-{index}", opened=time.time() - 60, updated_at=time.time() - 60) for index in range(5)]
    published = []  # what the keeper holds open, as nerve.alerts.open() answers

    @defer.inlineCallbacks
    def publish(alerts):
        for alert in alerts:
            published.append(alert)
            yield publish_acknowledged(keeper, CHANGED, alert)

    registration = yield keeper.register(lambda since=None: {"alerts": published[::-1], "silences": []},
                                          "nerve.alerts.open")
    yield publish(early)
    yield wait_until(lambda: len(hook.keys()) >= 5, timeout=10, message="the early alerts")
    second = notifier(config, data_dir=tmp_path / "second", name="second.toml")  # an outbox of its own
    yield wait_until(lambda: "caught up: 5 of 5" in second.output(), timeout=20, message="the standby catching up")
    delivered = EventLog()
    yield dashboard.subscribe(delivered, "nerve.notifier.delivered", options=SubscribeOptions(details_arg="details"))
    before = [record(host=f"pair-{index}") for index in range(10)]
    yield publish(before)
    yield wait_until(lambda: len(hook.keys()) >= 15, timeout=10, message="ten alerts")
    # The standby hears what the leader's channels took as the test does. A leader killed between its channel
    # taking a message and that event would have the message sent again by the standby, with the same key.
    yield wait_until(lambda: len({key for event in delivered.payloads() for key in event["keys"]}) >= 10,
                     timeout=10, message="the leader's delivery events")
    first.kill()
    after = [record(host=f"pair-{index}", metric="mem") for index in range(10)]
    yield publish(after)
    yield wait_until(lambda: len(hook.keys()) >= 25, timeout=20, message="the standby's deliveries")
    yield sleep(1.0)  # what is checked is an absence: nothing sent twice after the takeover
    yield registration.unregister()
    assert sorted(hook.keys()) == sorted(f"{alert['id']}|firing|0" for alert in early + before + after)


@pytest_twisted.inlineCallbacks
def test_a_starting_notifier_syncs_the_open_alerts_from_the_keeper(keeper, dashboard, notifier, hook):
    still_open = record(host="sync-01", level="MEDIUM")
    registration = yield keeper.register(lambda since=None: {"alerts": [still_open], "silences": []},
                                          "nerve.alerts.open")
    try:
        notifier(webhook_config(hook.url))
        yield wait_until(lambda: hook.keys(), timeout=20, message="the synced alert")
        assert hook.keys() == [f"{still_open['id']}|firing|0"]
    finally:
        yield registration.unregister()


@pytest_twisted.inlineCallbacks
def test_neither_anonymous_nor_operators_may_forge_records_or_deliveries(dashboard, operator_session):
    for session in (dashboard, operator_session):
        for topic, payload in ((CHANGED, record()), ("nerve.notifier.delivered", {"channel": "hook", "keys": ["x"]})):
            with pytest.raises(ApplicationError) as refused:
                yield publish_acknowledged(session, topic, payload)
            assert refused.value.error == "wamp.error.not_authorized"
