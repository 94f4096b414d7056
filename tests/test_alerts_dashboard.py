"""The alert feed in headless Chromium: an operator signs in on one page and acknowledges an alert; another, anonymous
page shows "acknowledged by" that operator within 1 s."""

import time

import pytest_twisted
from autobahn.wamp.types import PublishOptions
from twisted.internet import defer

from components.testing.live import call_until
# The dashboard tests' module-wide Chromium, and their skip without it.
from tests.test_dashboard import browser, pytestmark  # noqa: F401

ROW = "document.querySelector(`#alert-list [data-alert-id='${id}']`)"
# Installed in a page: the Date.now() at which the alert's row first says "acknowledged by <name>".
WATCH_ACK = """([id, name]) => {
  window.__ackShownAt = null;
  const seen = () => {
    const row = document.querySelector(`#alert-list [data-alert-id='${id}']`);
    if (!window.__ackShownAt && row && row.textContent.includes(`acknowledged by ${name}`)) window.__ackShownAt = Date.now();
  };
  new MutationObserver(seen).observe(document.querySelector('#alert-list'), { childList: true, subtree: true,
                                                                               characterData: true });
  seen();
}"""


@defer.inlineCallbacks
def sign_in(page, name, ticket):
    """Sign the page in as an operator and wait until the router accepted it."""
    def fill(p):
        p.fill("#signin input[name='authid']", name)
        p.fill("#signin input[name='ticket']", ticket)
        p.click("#signin button[type='submit']")

    yield page.do(fill)
    yield page.wait_for("() => window.nerve.signIn.signedIn && window.nerve.connection.state === 'connected'", timeout=10)


@defer.inlineCallbacks
def ack_from_page(page, alert_id, comment):
    """Open the Ack form of the alert's row, type the comment and submit; returns Date.now() of the submit."""
    yield page.wait_for(f"(id) => {ROW}?.querySelector(\"button[data-act='ack']\")", alert_id, timeout=5)
    yield page.do(lambda p: p.click(f"#alert-list [data-alert-id='{alert_id}'] button[data-act='ack']"))
    yield page.do(lambda p: p.fill("#alert-action input[name='comment']", comment))
    sent_at = yield page.evaluate("() => Date.now()")
    yield page.do(lambda p: p.click("#alert-action [data-action='submit']"))
    return sent_at


@pytest_twisted.inlineCallbacks
def test_an_ack_on_one_page_shows_on_another_within_a_second(router, start, operator_session, browser, tmp_path):
    start("alerts", "--data-dir", str(tmp_path))
    yield call_until(operator_session, "nerve.alerts.stats", lambda stats: stats["active"], timeout=20)
    event = {"host_id": "ui-web-01", "hostname": "ui-web-01", "metric": "cpu", "previous": "LOW", "level": "HIGH",
             "ts": time.time(), "seq": 1, "value": 97.0}
    yield operator_session.publish("nerve.alert.ui-web-01", event, options=PublishOptions(acknowledge=True))
    opened = yield call_until(operator_session, "nerve.alerts.open",
                              lambda answer: any(a["host_id"] == "ui-web-01" for a in answer["alerts"]))
    alert_id = next(a["id"] for a in opened["alerts"] if a["host_id"] == "ui-web-01")
    operator_page = yield browser.open(router.http_url)
    watcher_page = yield browser.open(router.http_url)
    try:
        for page in (operator_page, watcher_page):
            yield page.wait_for(f"(id) => {ROW}?.dataset.state === 'firing'", alert_id, timeout=5)
        # Anonymous pages get no buttons; the operator's gets them once signed in.
        assert not (yield watcher_page.evaluate(f"(id) => Boolean({ROW}.querySelector('button'))", alert_id))
        yield sign_in(operator_page, "alice", router.ticket("operator", "alice"))
        yield watcher_page.evaluate(WATCH_ACK, [alert_id, "alice"])
        sent_at = yield ack_from_page(operator_page, alert_id, "looking into it")
        shown_at = yield watcher_page.wait_for("() => window.__ackShownAt", timeout=5)
        assert shown_at - sent_at < 1000, f"the ack showed on the other page {shown_at - sent_at} ms after the click"
        text = yield watcher_page.evaluate(f"(id) => {ROW}.textContent", alert_id)
        assert "acknowledged by alice" in text and "looking into it" in text
        state = yield watcher_page.evaluate(f"(id) => {ROW}.dataset.state", alert_id)
        assert state == "acknowledged"
        counts = yield watcher_page.evaluate("() => document.querySelector('#alert-counts').textContent")
        assert "1 acknowledged" in counts, counts
        # Grouped by kind instead of host: the alert sits in the "cpu" group, its host named in the row.
        yield watcher_page.do(lambda p: p.select_option("#alert-group-by", "metric"))
        grouped = yield watcher_page.wait_for(f"(id) => {ROW}?.closest('[data-group]')?.dataset.group === 'cpu' "
                                              f"&& {ROW}.textContent", alert_id)
        assert "ui-web-01" in grouped
        # A wrong ticket is refused and the page goes on anonymously.
        yield operator_page.do(lambda p: p.click("#signout"))
        yield operator_page.wait_for("() => !window.nerve.signIn.signedIn && window.nerve.connection.state === 'connected'")
        yield operator_page.do(lambda p: (p.fill("#signin input[name='authid']", "alice"),
                                          p.fill("#signin input[name='ticket']", "not-a-ticket"),
                                          p.click("#signin button[type='submit']")))
        refused = yield operator_page.wait_for(
            "() => document.querySelector('#signin-state').dataset.state === 'refused' "
            "&& window.nerve.connection.state === 'connected' && document.querySelector('#signin-state').textContent",
            timeout=10)
        assert "nerve.error.not_authenticated" in refused
        for page in (operator_page, watcher_page):
            assert page.errors() == [], page.errors()
    finally:
        yield operator_page.close()
        yield watcher_page.close()
