"""The browser dashboard in headless Debian Chromium, against a real router and real component processes.

Playwright's sync API blocks and must stay on the thread that started it, while pytest-twisted runs the
reactor in a greenlet of the main thread. So one worker thread owns Playwright for the module and every
browser step is submitted to it and handed back as a Deferred: the reactor keeps running (tracker
sessions publish, meta calls answer) while the browser waits for a DOM condition.
"""

import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, threads

from components.testing.live import (ComponentProcess, RouterProcess, join, measurement, publish_acknowledged, sleep,
                                wait_for_callees)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not shutil.which("chromium") and not shutil.which("/usr/bin/chromium"),
                                reason="Debian chromium is not installed (make chromium)")


class Browser:
    """One headless Chromium for the module, driven from a single dedicated thread."""

    def __init__(self):
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="playwright")
        self.executor.submit(self._start).result(timeout=60)

    def _start(self):
        from playwright.sync_api import sync_playwright

        self.playwright = sync_playwright().start()
        self.chromium = self.playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)

    def run(self, function, *args, **kwargs):
        """Run function(*args) on the browser thread; a Deferred of its result."""
        result = defer.Deferred()
        future = self.executor.submit(function, *args, **kwargs)

        def deliver(done):
            error = done.exception()
            reactor.callFromThread(result.errback if error else result.callback, error or done.result())

        future.add_done_callback(deliver)
        return result

    @defer.inlineCallbacks
    def open(self, url, width=1280, height=800, scale=1):
        """A fresh page (own context) at url, with its console errors collected; fires once it is connected."""
        page = yield self.run(self._open, url, width, height, scale)
        yield page.wait_for("() => window.nerve && window.nerve.connection.state === 'connected'", timeout=10)
        return page

    def _open(self, url, width, height, scale=1):
        context = self.chromium.new_context(viewport={"width": width, "height": height}, device_scale_factor=scale)
        page = context.new_page()
        driver = Page(self, context, page)
        page.on("console", lambda message: driver.console.append((message.type, message.text)))
        page.on("pageerror", lambda error: driver.console.append(("pageerror", str(error))))
        page.goto(url)
        return driver

    def close(self):
        def stop():
            self.chromium.close()
            self.playwright.stop()

        self.executor.submit(stop).result(timeout=30)
        self.executor.shutdown()


class Page:
    """A page whose every step runs on the browser thread and returns a Deferred."""

    def __init__(self, browser, context, page):
        self.browser = browser
        self.context = context
        self.page = page
        self.console = []

    def errors(self):
        return [text for kind, text in self.console if kind in ("error", "pageerror")]

    def wait_for(self, expression, arg=None, timeout=5.0):
        """Wait until the JS expression (a function of arg) is truthy in the page; fires with its value."""
        return self.browser.run(lambda: self.page.wait_for_function(expression, arg=arg, timeout=timeout * 1000,
                                                                    polling=20).json_value())

    def evaluate(self, expression, arg=None):
        return self.browser.run(self.page.evaluate, expression, arg)

    def do(self, function):
        """function(playwright_page) on the browser thread."""
        return self.browser.run(function, self.page)

    def close(self):
        return self.browser.run(self.context.close)


@pytest.fixture(scope="module")
def browser():
    instance = Browser()
    yield instance
    instance.close()


@pytest.fixture
def pages(browser):
    """Open pages for one test; closed when it ends."""
    opened = []

    @defer.inlineCallbacks
    def open_page(url, **size):
        page = yield browser.open(url, **size)
        opened.append(page)
        return page

    yield open_page
    for page in opened:
        browser.executor.submit(page.context.close).result(timeout=30)


TILE = "(id) => document.querySelector(`#tiles li[data-host='${id}']`)"


def tile_where(condition):
    """A page predicate over one host's tile element `t` (argument: the host id)."""
    return f"(id) => {{ const t = ({TILE})(id); return Boolean(t && !t.hidden && ({condition})); }}"


@defer.inlineCallbacks
def tracker_session(router, host_id):
    session = yield join(router.rawsocket_url, "tracker", host_id, router.ticket("tracker", host_id))
    return session


@defer.inlineCallbacks
def publish_samples(session, host_id, samples, first_seq=1, run="dash-run"):
    """Publish (ts, metrics) pairs as consecutive measurements of host_id."""
    for offset, (ts, metrics) in enumerate(samples):
        event = measurement(host_id, first_seq + offset, metrics, ts=ts, run=run)
        yield publish_acknowledged(session, f"nerve.measure.{host_id}", event)


@pytest_twisted.inlineCallbacks
def test_page_loads_without_console_errors_and_shows_the_trackers_host(router, orchestrator, start, pages, dashboard):
    start("tracker", "--host-id", "dash-load", "--authid", "dash-load", "--interval", "0.5")
    # The tracker process needs a moment to import and join; the 5 s budget starts once it measured.
    deadline = time.monotonic() + 20
    while "dash-load" not in (yield dashboard.call("nerve.snapshot"))["hosts"]:
        assert time.monotonic() < deadline, "the tracker never reported"
        yield sleep(0.1)
    started = time.monotonic()
    page = yield pages(router.http_url)
    yield page.wait_for(tile_where("t.dataset.stale === 'false'"), "dash-load", timeout=5)
    assert time.monotonic() - started < 5
    # Other tests' hosts share the overview: the name filter narrows it to this one (off-screen tiles are not drawn).
    yield page.do(lambda p: p.fill("#overview-controls input[name='q']", "dash-load"))
    shown = yield page.wait_for("() => { const shown = [...document.querySelectorAll('#tiles li')].filter(li => !li.hidden);"
                                " return shown.length === 1 && shown[0].dataset.host }")
    assert shown == "dash-load"
    yield page.wait_for(tile_where("/CPU/.test(t.textContent) && /%/.test(t.textContent)"), "dash-load")
    text = yield page.evaluate(f"(id) => ({TILE})(id).textContent", "dash-load")
    assert "dash-load" in text and "CPU" in text and "ago" in text
    # Keyboard: the tile is a link, so it is focusable and Enter opens the host.
    yield page.do(lambda p: p.focus("#tiles li[data-host='dash-load'] a"))
    yield page.do(lambda p: p.keyboard.press("Enter"))
    yield page.wait_for("() => !document.querySelector('#detail-view').hidden && "
                        "document.querySelector('[data-detail=\"id\"]').textContent === 'dash-load'")
    # Charts come from the schema, with its units: CPU in %, network in B/s.
    captions = yield page.wait_for("() => { const c = [...document.querySelectorAll('.chart figcaption')]"
                                   ".map(e => e.textContent); return c.includes('CPU (%)') && c }", timeout=5)
    assert "CPU (%)" in captions and any("(B/s)" in caption for caption in captions), captions
    assert page.errors() == [], page.console

    # A phone-width window has no horizontal scrolling.
    phone = yield pages(router.http_url, width=390, height=844)
    yield phone.do(lambda p: p.fill("#overview-controls input[name='q']", "dash-load"))  # on screen whatever ran before
    yield phone.wait_for(tile_where("true"), "dash-load")
    overflow = yield phone.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    assert phone.errors() == [], phone.console


@pytest_twisted.inlineCallbacks
def test_host_driven_high_turns_its_tile_high_and_adds_an_alert_within_2_s(router, orchestrator, start, pages, dashboard,
                                                                          tmp_path):
    start("alerts", "--data-dir", str(tmp_path))  # the feed shows the alert keeper's records
    yield wait_for_callees(dashboard, "nerve.alerts.open", 1, timeout=20)
    yield wait_for_callees(dashboard, "nerve.analyze", 0)
    start("analyzer", "--authid", "analyzer-dash-high")
    yield wait_for_callees(dashboard, "nerve.analyze", 1)
    page = yield pages(router.http_url)
    session = yield tracker_session(router, "dash-hot")
    now = time.time()
    yield publish_samples(session, "dash-hot", [(now - 3, {"cpu": 10.0}), (now - 2, {"cpu": 12.0})])
    yield page.wait_for(tile_where("t.dataset.level === 'LOW'"), "dash-hot", timeout=5)

    now = time.time()
    yield publish_samples(session, "dash-hot", [(now - 1, {"cpu": 95.0}), (now, {"cpu": 95.0})], first_seq=3)
    published = time.monotonic()
    yield page.wait_for(tile_where("t.dataset.level === 'HIGH' && t.querySelector('.badge').textContent === 'HIGH'"),
                        "dash-hot", timeout=2)
    yield page.wait_for("() => [...document.querySelectorAll('#alert-list li[data-host=\"dash-hot\"]')]"
                        ".some(li => li.dataset.level === 'HIGH' && li.dataset.metric === 'cpu')", timeout=2)
    assert time.monotonic() - published < 2
    first = yield page.evaluate("() => document.querySelector('#alert-list li')?.textContent")
    assert "dash-hot" in first and "LOW" in first and "HIGH" in first and "cpu" in first
    # The ad-hoc alert shape (`nerve alert send`) lands in the feed's messages, on top.
    operator = yield join(router.rawsocket_url, "operator", "dash-operator", router.ticket("operator", "dash-operator"))
    yield publish_acknowledged(operator, "nerve.alert.dash-hot", {"message": "deploy started", "ts": time.time(),
                                                                  "sender": "dash-operator"})
    yield page.wait_for("() => document.querySelector('#alert-messages li')?.textContent.includes('deploy started')")
    assert page.errors() == [], page.console
    yield session.leave()
    yield operator.leave()


@pytest_twisted.inlineCallbacks
def test_a_page_opened_later_draws_the_recent_history_in_its_sparkline(router, orchestrator, pages, dashboard):
    session = yield tracker_session(router, "dash-spark")
    now = time.time()
    cpu = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0]
    yield publish_samples(session, "dash-spark", [(now - 8 + k, {"cpu": value}) for k, value in enumerate(cpu)])
    yield session.leave()
    deadline = time.monotonic() + 5
    while (yield dashboard.call("nerve.snapshot"))["hosts"].get("dash-spark", {}).get("seq") != len(cpu):
        assert time.monotonic() < deadline, "the orchestrator never had all samples"
        yield sleep(0.05)

    page = yield pages(router.http_url)
    yield page.do(lambda p: p.fill("#overview-controls input[name='q']", "dash-spark"))
    # No measurement arrives after the page opens: every point comes from the snapshot's history.
    points = yield page.wait_for(tile_where("t.querySelector('.spark-line').getAttribute('points').trim()"
                                            ".split(' ').length >= 8"), "dash-spark", timeout=5)
    assert points
    line = yield page.evaluate(f"(id) => ({TILE})(id).querySelector('.spark-line').getAttribute('points')", "dash-spark")
    heights = [point.split(",")[1] for point in line.split()]
    assert heights == [f"{100 - value:.1f}" for value in cpu], line  # oldest first, newest at the right edge
    assert page.errors() == [], page.console


@pytest_twisted.inlineCallbacks
def test_tracker_leaving_turns_its_tile_stale_until_it_joins_again(router, orchestrator, start, pages):
    tracker_args = ("tracker", "--host-id", "dash-leave", "--authid", "dash-leave", "--interval", "0.2")
    tracker = start(*tracker_args)
    page = yield pages(router.http_url)
    yield page.wait_for(tile_where("t.dataset.stale === 'false'"), "dash-leave", timeout=20)
    tracker.stop()
    left = time.monotonic()
    # nerve.mesh.left marks it at once, without waiting for the measurement to age.
    left_note = tile_where("t.dataset.stale === 'true' && /tracker left/.test(t.textContent)")
    yield page.wait_for(left_note, "dash-leave", timeout=3)
    assert time.monotonic() - left < 3
    # Measurements published just before the leave are still on their way through the analysis when the leave
    # event arrives; their analysis must not bring the tile back to life.
    yield sleep(1.5)
    still_left = yield page.evaluate(left_note, "dash-leave")
    assert still_left, "a measurement in flight at the leave made the tile look live again"
    # Only the tracker joining again does.
    start(*tracker_args)
    yield page.wait_for(tile_where("t.dataset.stale === 'false' && !/stale/.test(t.textContent)"), "dash-leave",
                        timeout=20)


@pytest_twisted.inlineCallbacks
def test_mesh_panel_counts_a_second_analyzer_coming_and_going(router, orchestrator, start, pages, dashboard):
    yield wait_for_callees(dashboard, "nerve.analyze", 0)
    start("analyzer", "--authid", "analyzer-dash-1")
    yield wait_for_callees(dashboard, "nerve.analyze", 1)
    page = yield pages(router.http_url)
    count = "(n) => document.querySelector('#mesh-analyzers').textContent === String(n)"
    yield page.wait_for(count, 1)
    second = start("analyzer", "--authid", "analyzer-dash-2")
    yield page.wait_for(count, 2, timeout=20)
    # Each instance shows its calls in flight against its cap, from nerve.analyzer.<authid>.
    yield page.wait_for("() => /\\d+ \\/ 1/.test(document.querySelector('tr[data-analyzer=\"analyzer-dash-2\"]')"
                        "?.textContent ?? '')", timeout=5)
    orchestrators = yield page.evaluate("() => document.querySelector('[data-mesh=\"orchestrators\"]').textContent")
    assert orchestrators == "1"
    second.stop()
    yield page.wait_for(count, 1, timeout=5)
    yield page.wait_for("() => !document.querySelector('tr[data-analyzer=\"analyzer-dash-2\"]')")
    assert page.errors() == [], page.console


@pytest_twisted.inlineCallbacks
def test_mesh_panel_counts_roles_from_the_routers_filtered_view(router, orchestrator, pages, dashboard):
    # The page may not read the session meta API; its counts come from nerve.mesh.sessions and nerve.mesh.joined/left.
    role_count = "([key, n]) => document.querySelector(`[data-mesh='${key}']`).textContent === String(n)"
    view = yield dashboard.call("nerve.mesh.sessions")
    trackers = sum(1 for record in view["sessions"] if record["authrole"] == "tracker")
    page = yield pages(router.http_url)
    yield page.wait_for(role_count, ["trackers", trackers], timeout=5)
    # Anonymous sessions are counted (this test's own, the page's), not listed.
    dashboards = int((yield page.wait_for("() => Number(document.querySelector(\"[data-mesh='dashboards']\").textContent) >= 2"
                                          " && document.querySelector(\"[data-mesh='dashboards']\").textContent")))
    tracker = yield tracker_session(router, "dash-mesh-count")
    yield page.wait_for(role_count, ["trackers", trackers + 1], timeout=3)
    second = yield pages(router.http_url)
    yield page.wait_for(role_count, ["dashboards", dashboards + 1], timeout=3)
    yield second.close()
    yield page.wait_for(role_count, ["dashboards", dashboards], timeout=5)
    yield tracker.leave()
    yield page.wait_for(role_count, ["trackers", trackers], timeout=3)
    # What the page holds of the other sessions: ids, authids and roles, nothing of their connections.
    held = yield page.evaluate("() => JSON.stringify([...window.nerve.mesh.sessions.values()])")
    assert "dash-mesh-count" not in held and "transport" not in held and "127.0.0.1" not in held
    assert page.errors() == [], page.console


@pytest_twisted.inlineCallbacks
def test_analyze_action_shows_a_result_and_the_no_analyzer_error(router, orchestrator, start, pages, dashboard):
    yield wait_for_callees(dashboard, "nerve.analyze", 0)
    analyzer = start("analyzer", "--authid", "analyzer-dash-analyze")
    yield wait_for_callees(dashboard, "nerve.analyze", 1)
    session = yield tracker_session(router, "dash-analyze")
    now = time.time()
    yield publish_samples(session, "dash-analyze", [(now - 3 + i, {"cpu": 20.0 + i, "mem": 50.0}) for i in range(4)])
    page = yield pages(router.http_url + "#/host/dash-analyze")
    yield page.wait_for("() => document.querySelector('tr[data-metric=\"mem\"]')", timeout=5)
    yield page.do(lambda p: p.click("[data-detail='analyze']"))
    result = yield page.wait_for("() => { const r = document.querySelector('#analyze-result');"
                                 " return r.dataset.state === 'ok' && r.textContent }", timeout=10)
    assert "4 samples" in result and "analyzer-dash-analyze" in result

    analyzer.stop()
    yield wait_for_callees(dashboard, "nerve.analyze", 0)
    yield page.do(lambda p: p.click("[data-detail='analyze']"))
    error = yield page.wait_for("() => { const r = document.querySelector('#analyze-result');"
                                " return r.dataset.state === 'error' && r.textContent }", timeout=10)
    assert "no analyzer is connected" in error
    # The mesh panel agrees: no analyzer.
    yield page.wait_for("() => document.querySelector('#mesh-analyzers').textContent === '0'")
    assert page.errors() == [], page.console
    yield session.leave()


@pytest_twisted.inlineCallbacks
def test_page_refuses_to_publish_measurements_or_register(router, orchestrator, pages):
    page = yield pages(router.http_url)
    outcome = yield page.evaluate("""async () => {
        const session = window.nerve.session, out = {};
        const event = {host_id: 'x', hostname: 'x', run: 'r', seq: 1, ts: Date.now() / 1000, interval: 1, metrics: {cpu: 1}};
        try { await session.publish('nerve.measure.x', [event], {}, {acknowledge: true}); out.publish = 'accepted'; }
        catch (error) { out.publish = error.error; }
        try { await session.register('nerve.analyze', () => null); out.register = 'accepted'; }
        catch (error) { out.register = error.error; }
        return out;
    }""")
    assert outcome["publish"] == "wamp.error.not_authorized", outcome
    assert outcome["register"] == "wamp.error.not_authorized", outcome


@pytest_twisted.inlineCallbacks
def test_router_restart_shows_the_outage_and_recovers_without_reload(tmp_path, pages):
    own_router = RouterProcess(tmp_path / "restart-router")
    routers = [own_router]
    yield threads.deferToThread(own_router.start)
    processes = [ComponentProcess(own_router, "orchestrator", "--tick", "0.5"),
                 ComponentProcess(own_router, "tracker", "--host-id", "rc-host", "--authid", "rc-host", "--interval", "0.5")]
    try:
        page = yield pages(own_router.http_url)
        yield page.wait_for(tile_where("t.dataset.stale === 'false'"), "rc-host", timeout=20)
        yield page.evaluate("() => { window.loadMarker = 'same page'; }")
        before = yield page.evaluate("() => window.nerve.overview.host('rc-host').seq")

        yield threads.deferToThread(own_router.stop)
        yield page.wait_for("() => document.querySelector('#connection').dataset.state === 'reconnecting'"
                            " && !document.querySelector('#banner').hidden && document.querySelector('#tiles.offline')",
                            timeout=10)
        status = yield page.evaluate("() => document.querySelector('#connection').textContent")
        assert "lost" in status.lower()

        routers.append(RouterProcess(own_router.workdir, port=own_router.port))
        yield threads.deferToThread(routers[-1].start)
        yield page.wait_for("() => document.querySelector('#connection').dataset.state === 'connected'", timeout=15)
        # The tracker and orchestrator rejoin by themselves; the page backfills and goes live again.
        yield page.wait_for(f"(before) => {{ const h = window.nerve.overview.host('rc-host');"
                            f" const t = ({TILE})('rc-host');"
                            f" return h && h.seq !== before && t.dataset.stale === 'false'; }}", before, timeout=20)
        yield page.wait_for("() => document.querySelector('#banner').hidden && !document.querySelector('#tiles.offline')",
                            timeout=5)
        state = yield page.evaluate("() => ({marker: window.loadMarker, joins: window.nerve.connection.joins,"
                                    " trackers: document.querySelector('[data-mesh=\"trackers\"]').textContent})")
        assert state["marker"] == "same page" and state["joins"] >= 2, state
        yield page.wait_for("() => document.querySelector('[data-mesh=\"orchestrators\"]').textContent === '1'")
    finally:
        for process in processes:
            process.stop()
        for each in routers:
            yield threads.deferToThread(each.stop)
