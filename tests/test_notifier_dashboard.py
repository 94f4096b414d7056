"""The dashboard's mesh panel in headless Chromium names a notifier channel that cannot be reached, and stops naming
it once the channel takes messages again."""

import time

import pytest_twisted

from components.testing.live import call_until, publish_acknowledged
from components.testing.receivers import WebhookReceiver
from tests.test_dashboard import browser, pytestmark  # noqa: F401  (its Chromium fixture; skipped without Chromium)
from tests.test_notifier import CHANGED, STATS, keeper, record  # noqa: F401  (keeper: the keeper role's session)

UNREACHABLE = ("(name) => { const item = document.querySelector(`[data-mesh-notifier] [data-channel='${name}']`); "
               "return item && item.dataset.channelState === 'unreachable' && item.textContent; }")
ALL_REACHABLE = "() => document.querySelector('[data-mesh-notifier]')?.textContent === " \
                "'Notifications: 2 of 2 channels reachable'"


@pytest_twisted.inlineCallbacks
def test_the_mesh_panel_shows_an_unreachable_channel(router, browser, keeper, start, tmp_path, dashboard):
    hook, pager = WebhookReceiver(), WebhookReceiver()
    yield pager.down()
    config = tmp_path / "notify.toml"
    config.write_text(f'max_retry_delay = 1\n[channels.hook]\ntype = "webhook"\nurl = "{hook.url}"\n'
                      f'[channels.pager]\ntype = "webhook"\nurl = "{pager.url}"\n'
                      f'[[routes]]\nchannels = ["hook", "pager"]\ngroup_wait = 0\n')
    start("notifier", "--config", str(config), "--data-dir", str(tmp_path / "data"))
    page = yield browser.open(router.http_url)
    try:
        yield call_until(dashboard, STATS, lambda stats: stats["leader"], timeout=20)
        yield publish_acknowledged(keeper, CHANGED, record(host="panel-01", opened=time.time()))
        text = yield page.wait_for(UNREACHABLE, "pager", timeout=10)
        assert "Connection refused" in text and "1 waiting" in text, text
        assert not (yield page.evaluate(UNREACHABLE, "hook"))
        pager.up()
        yield page.wait_for(ALL_REACHABLE, timeout=10)
        assert len(pager.keys()) == 1 and page.errors() == []
    finally:
        yield page.close()
        yield hook.down()
        yield pager.down()
