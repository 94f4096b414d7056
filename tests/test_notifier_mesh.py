"""End to end through `nerve up --notify FILE`: a level event becomes an alert record at the alert keeper, the
notifier posts it to a webhook; an acknowledgement sends nothing, the resolution does; a silenced host pages nobody."""

import time

import pytest_twisted
from twisted.internet import defer

from components.testing.live import MeshUpProcess, call_until, publish_acknowledged, sleep, wait_until
from components.testing.receivers import WebhookReceiver


def level_event(host, level, previous, value):
    """A level change as the orchestrator publishes it on nerve.alert.<host>."""
    return {"host_id": host, "hostname": host, "metric": "cpu", "previous": previous, "level": level, "value": value,
            "ts": time.time(), "seq": 1}


@pytest_twisted.inlineCallbacks
def test_nerve_up_with_a_notifier_pages_through_the_alert_keeper(tmp_path):
    hook = WebhookReceiver()
    config = tmp_path / "notify.toml"
    config.write_text(f'[channels.hook]\ntype = "webhook"\nurl = "{hook.url}"\n'
                      f'[[routes]]\nchannels = ["hook"]\ngroup_wait = 0\nrepeat_interval = 1\n')
    mesh = MeshUpProcess(tmp_path, "--notify", str(config), "--analyzers", "0", "--compute", "0",
                         "--exporter-port", "0", "--data-dir", str(tmp_path / "data"))
    try:
        mesh.wait_ready()
        operator = yield mesh.join("operator", "pager-test")
        yield call_until(operator, "nerve.notifier.stats", lambda stats: stats["leader"], timeout=30)
        yield call_until(operator, "nerve.alerts.open", lambda answer: isinstance(answer, dict), timeout=30)
        yield operator.call("nerve.silence.create", {"host": "quiet-*"}, duration=600, comment="maintenance")

        yield publish_acknowledged(operator, "nerve.alert.quiet-01", level_event("quiet-01", "HIGH", "LOW", 96.0))
        yield publish_acknowledged(operator, "nerve.alert.loud-01", level_event("loud-01", "HIGH", "LOW", 97.0))
        yield wait_until(lambda: hook.alerts(), timeout=10, message="the page")
        (alert,) = hook.alerts()
        assert (alert["host_id"], alert["level"], alert["status"], alert["repeat"]) == ("loud-01", "HIGH", "firing", 0)
        assert alert["url"].startswith("http://127.0.0.1:8080/") and "loud-01" in alert["url"]

        # Not acknowledged: it repeats (repeat_interval 1 s); acknowledged, it stops.
        yield wait_until(lambda: any(a["repeat"] >= 1 for a in hook.alerts()), timeout=10, message="a repeat")
        yield operator.call("nerve.alert.ack", alert["id"], comment="on it")
        acked_at = time.monotonic()
        yield sleep(2.5)  # what is checked is an absence: two repeat intervals without a page
        late = [body for arrived, _, body in hook.messages if arrived > acked_at + 0.5]
        assert late == [], late
        yield publish_acknowledged(operator, "nerve.alert.loud-01", level_event("loud-01", "LOW", "HIGH", 12.0))
        yield wait_until(lambda: any(a["status"] == "resolved" for a in hook.alerts()), timeout=10, message="resolved")
        assert hook.alerts()[-1]["key"] == f"{alert['id']}|resolved|0"
        assert len(set(hook.keys())) == len(hook.keys())
        assert all(a["host_id"] == "loud-01" for a in hook.alerts())  # the silenced host paged nobody
        yield operator.leave()
    finally:
        mesh.stop()
        yield defer.maybeDeferred(hook.down)
