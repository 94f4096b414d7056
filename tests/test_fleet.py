"""The fleet overview at scale in headless Chromium: the canvas map, virtualised tiles, search and the header counts.

Each test group runs its own router and mesh (the session router's orchestrator would keep a large fleet for every
later test). The browser is the one of tests/test_dashboard.py, driven from its own thread.
"""

import time

import pytest
import pytest_twisted
from twisted.internet import defer, task, threads

from components.monitor.orchestrator import digest_entries
from components.testing.live import ComponentProcess, RouterProcess, call_until, join, measurement, publish_acknowledged, sleep
from tests import test_dashboard

browser = test_dashboard.browser  # the module's one headless Chromium, on its own thread
pages = test_dashboard.pages
pytestmark = test_dashboard.pytestmark  # skipped without Debian chromium

FLEET = 400  # past the tiles' limit (300 matching hosts), so the page opens on the map
PROBE = "fleet-probe"

# Every host the map drew, checked pixel by pixel: the centre of each cell has its level's colour (stale ones
# blended with the background at the stale alpha), after a synchronous frame so the canvas matches the model.
MAP_PIXELS = """async () => {
    const levels = await import('/js/levels.js');
    const overview = window.nerve.overview, map = overview.map;
    overview.render();
    const ctx = map.canvas.getContext('2d');
    const rgb = (hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
    const background = rgb(map.background);
    let wrong = [];
    for (const host of map.cells) {
        const cell = map.cellOf(host);
        const x = Math.floor((cell.x + cell.size / 2) * map.dpr), y = Math.floor((cell.y + cell.size / 2) * map.dpr);
        const got = ctx.getImageData(x, y, 1, 1).data;
        const alpha = host.stale ? levels.STALE.alpha : 1;
        const want = rgb(levels.levelColor(host.levelKey)).map((c, i) => c * alpha + background[i] * (1 - alpha));
        if (want.some((c, i) => Math.abs(c - got[i]) > 3)) wrong.push(host.id);
    }
    return {cells: map.cells.length, distinct: new Set(map.cells.map((h) => h.id)).size, wrong: wrong.slice(0, 5),
            wrongCount: wrong.length};
}"""

CELL_CENTRE = """(id) => {
    const overview = window.nerve.overview, host = overview.host(id);
    const cell = host && overview.mode === 'map' && overview.map.cellOf(host);
    if (!cell) return null;
    const box = overview.map.canvas.getBoundingClientRect();
    return {x: box.left + cell.x + cell.size / 2, y: box.top + cell.y + cell.size / 2};
}"""

HEADER_COUNTS = """() => Object.fromEntries([...document.querySelectorAll('#summary [data-count]')]
    .map((el) => [el.dataset.count, Number(el.textContent)]))"""

DOM_SIZE = "() => document.getElementsByTagName('*').length"


@pytest.fixture
def own_router(tmp_path):
    """A router of the test's own, for sessions that play a component's role (an orchestrator, a keeper)."""
    router = RouterProcess(tmp_path / "router").start()
    yield router
    router.stop()


class Fleet:
    """A router of the test's own with an orchestrator, an analyzer and a simulator of `hosts` hosts."""

    def __init__(self, workdir, hosts, interval="1", analyzer=True, tick="0.25"):
        self.router = RouterProcess(workdir).start()
        self.processes = [ComponentProcess(self.router, "orchestrator", "--tick", tick)]
        if analyzer:
            self.processes.append(ComponentProcess(self.router, "analyzer", "--authid", "fleet-analyzer"))
        self.simulator = ComponentProcess(self.router, "tracker", "--hosts", str(hosts), "--interval", interval)
        self.processes.append(self.simulator)

    def stop(self):
        for process in self.processes:
            process.stop()
        self.router.stop()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    instance = Fleet(tmp_path_factory.mktemp("fleet"), FLEET)
    yield instance
    instance.stop()


@defer.inlineCallbacks
def operator(router, name):
    """A backend session (large message limit) for snapshots the test compares the page with."""
    session = yield join(router.rawsocket_url, "operator", name, router.ticket("operator", name))
    return session


def wait_for_hosts(session, count, timeout=60):
    """Until the orchestrator knows `count` hosts; fires with its snapshot."""
    return call_until(session, "nerve.snapshot", lambda snapshot: len(snapshot["hosts"]) >= count, timeout=timeout,
                      interval=0.25, message=f"{count} hosts in the snapshot")


@defer.inlineCallbacks
def open_overview(pages, url, hosts, scale=1):
    """A page on the overview (at device pixel ratio `scale`) once it drew `hosts` hosts."""
    page = yield pages(url, scale=scale)
    yield page.wait_for("(n) => window.nerve.overview.drawnHosts >= n", hosts, timeout=20)
    return page


@pytest_twisted.inlineCallbacks
def test_map_draws_every_host_hover_shows_its_values_and_click_opens_its_detail(fleet, pages):
    watcher = yield operator(fleet.router, "fleet-watch")
    tracker = yield join(fleet.router.rawsocket_url, "tracker", PROBE, fleet.router.ticket("tracker", PROBE))
    # The fleet's components start with the module and may still be joining: a measurement published before the
    # orchestrator subscribes reaches nobody, so the probe publishes once the simulator's hosts are known.
    yield wait_for_hosts(watcher, FLEET)
    for seq in range(1, 4):
        event = measurement(PROBE, seq, {"cpu": 42.5, "mem": 61.0}, ts=time.time() - 3 + seq)
        yield publish_acknowledged(tracker, f"nerve.measure.{PROBE}", event)
    yield wait_for_hosts(watcher, FLEET + 1)
    page = yield open_overview(pages, fleet.router.http_url, FLEET + 1)
    assert (yield page.evaluate("() => window.nerve.overview.mode")) == "map"
    drawn = yield page.evaluate(MAP_PIXELS)
    assert drawn["cells"] == drawn["distinct"] == FLEET + 1, drawn
    assert drawn["wrongCount"] == 0, drawn
    # One canvas, not a node per host.
    assert (yield page.evaluate(DOM_SIZE)) < 1500

    # Hover: the card names the host and shows its headline values with the schema's labels and units.
    cell = yield page.wait_for(CELL_CENTRE, PROBE)
    yield page.do(lambda p: p.mouse.move(cell["x"], cell["y"]))
    card = yield page.wait_for("(id) => { const c = document.querySelector('#fleet-card');"
                               " return !c.hidden && c.dataset.host === id && c.textContent }", PROBE)
    assert PROBE in card and "CPU 42.5%" in card and "Memory used 61.0%" in card, card
    # A new measurement shows in the open card.
    event = measurement(PROBE, 4, {"cpu": 77.5, "mem": 61.0})
    yield publish_acknowledged(tracker, f"nerve.measure.{PROBE}", event)
    yield page.wait_for("() => document.querySelector('#fleet-card').textContent.includes('CPU 77.5%')", timeout=3)

    # Click: the host's detail opens; back, the map has the keyboard focus on the same host.
    cell = yield page.evaluate(CELL_CENTRE, PROBE)
    yield page.do(lambda p: p.mouse.click(cell["x"], cell["y"]))
    yield page.wait_for("(id) => !document.querySelector('#detail-view').hidden"
                        " && document.querySelector('[data-detail=\"id\"]').textContent === id", PROBE)
    yield page.do(lambda p: p.go_back())
    yield page.wait_for("(id) => document.activeElement.id === 'fleet-canvas'"
                        " && document.querySelector('#fleet-card').dataset.host === id", PROBE)
    # Arrow keys move along the map, Enter opens the focused host.
    yield page.do(lambda p: p.keyboard.press("Home"))
    first = yield page.evaluate("() => window.nerve.overview.map.cells[0].id")
    yield page.do(lambda p: p.keyboard.press("ArrowRight"))
    second = yield page.evaluate("() => window.nerve.overview.map.cells[1].id")
    yield page.wait_for("(id) => document.querySelector('#fleet-card').dataset.host === id", second)
    yield page.do(lambda p: p.keyboard.press("Enter"))
    yield page.wait_for("(id) => window.location.hash === `#/host/${id}`", second)
    assert first != second
    assert page.errors() == [], page.console
    yield tracker.leave()
    yield watcher.leave()


@pytest_twisted.inlineCallbacks
def test_search_and_filters_narrow_the_fleet_and_tiles_stay_virtualised(fleet, pages):
    page = yield open_overview(pages, fleet.router.http_url, FLEET)
    # A search matching 100 hosts goes to tiles (below the map's threshold); only those near the screen exist.
    yield page.do(lambda p: p.fill("#overview-controls input[name='q']", "sim-00"))
    yield page.wait_for("() => window.nerve.overview.mode === 'tiles' && window.nerve.overview.drawnHosts === 100")
    tiles = yield page.evaluate("() => [...document.querySelectorAll('#tiles li')].map((li) => li.dataset.host)")
    assert 0 < len(tiles) < 100 and all(host.startswith("sim-00") for host in tiles), tiles
    assert (yield page.evaluate("() => document.querySelector('#host-count').textContent")).startswith("100 of ")

    # Tiles for the whole fleet on request: still only a screenful or three in the DOM, and scrolling rebinds them.
    yield page.do(lambda p: p.fill("#overview-controls input[name='q']", ""))
    yield page.do(lambda p: p.select_option("#overview-controls select[name='view']", "tiles"))
    yield page.wait_for("(n) => window.nerve.overview.mode === 'tiles' && window.nerve.overview.drawnHosts >= n", FLEET)
    bound = yield page.evaluate("() => document.querySelectorAll('#tiles li').length")
    assert 0 < bound < 150, bound
    yield page.do(lambda p: p.select_option("#overview-controls select[name='sort']", "name"))
    yield page.wait_for("() => document.querySelector('#tiles li[data-host=\"sim-0000\"]')")
    yield page.evaluate("() => window.scrollTo(0, document.body.scrollHeight)")
    yield page.wait_for("(last) => document.querySelector(`#tiles li[data-host='${last}']`)"
                        " && !document.querySelector('#tiles li[data-host=\"sim-0000\"]')", f"sim-{FLEET - 1:04d}")
    assert (yield page.evaluate("() => document.querySelectorAll('#tiles li').length")) < 150

    # A level filter: every host shown has that level; the map comes back on "Auto" when more than 300 match.
    yield page.do(lambda p: p.select_option("#overview-controls select[name='level']", "LOW"))
    yield page.evaluate("() => window.scrollTo(0, 0)")
    yield page.wait_for("() => { const o = window.nerve.overview; return o.ordered.length > 0"
                        " && o.ordered.every((h) => h.levelKey === 'LOW') }")
    yield page.wait_for("() => [...document.querySelectorAll('#tiles li')].every((li) => li.dataset.level === 'LOW')")
    yield page.do(lambda p: p.select_option("#overview-controls select[name='level']", "all"))
    yield page.do(lambda p: p.select_option("#overview-controls select[name='view']", "auto"))
    yield page.wait_for("(n) => window.nerve.overview.mode === 'map' && window.nerve.overview.drawnHosts >= n", FLEET)
    assert (yield page.evaluate("() => document.querySelectorAll('#tiles li').length")) == 0  # the map holds no tile

    # From the map to tiles, the input's frame binds the tiles on screen only, and the screen below a frame later.
    steps = yield page.evaluate(SEARCH_TO_TILES, "sim-00")
    assert 0 < steps["first"] < steps["later"] <= 100 and steps["first"] <= steps["onScreen"], steps
    assert page.errors() == [], page.console


# Types a search into the overview; the tiles in the DOM after the input's frame, the tiles that fit the screen, and
# the tiles in the DOM once they stop changing.
SEARCH_TO_TILES = """async (query) => {
    const input = document.querySelector('#overview-controls').elements.q;
    input.value = query;
    input.dispatchEvent(new Event('input', {bubbles: true}));
    const tiles = () => document.querySelectorAll('#tiles li').length;
    await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
    const first = tiles(), list = document.querySelector('#tiles').getBoundingClientRect();
    const tile = document.querySelector('#tiles li').getBoundingClientRect();
    const columns = Math.floor((list.width + 8) / (tile.width + 8));
    const onScreen = Math.ceil((window.innerHeight - Math.max(list.top, 0)) / (tile.height + 8)) * columns;
    let later = first;
    for (let frame = 0; frame < 30; frame += 1) {
        await new Promise((resolve) => requestAnimationFrame(resolve));
        later = tiles();
    }
    return {first, onScreen, later};
}"""


@defer.inlineCallbacks
def digest_levels(router, name):
    """A backend session following nerve.digest from a snapshot: host -> level key, kept current."""
    session = yield operator(router, name)
    levels = {}

    def on_digest(digest):
        for host_id, entry in digest_entries(digest).items():
            levels[host_id] = entry.get("level") or "none"

    yield session.subscribe(on_digest, "nerve.digest")
    snapshot = yield call_until(session, "nerve.snapshot", bool)
    for host_id, entry in snapshot["hosts"].items():
        levels.setdefault(host_id, entry.get("level") or "none")
    return session, levels


def counted(levels):
    """Header counts from host levels: total and one per level key."""
    counts = {"total": len(levels)}
    for level in levels.values():
        counts[level] = counts.get(level, 0) + 1
    return counts


# Over `ms`, the animation frames the page's own code asked for and the digests it applied.
TIME_FRAMES = """(ms) => new Promise((resolve) => {
    const overview = window.nerve.overview, ask = window.requestAnimationFrame, apply = overview.applyDigest;
    const times = {frames: [], digests: []};
    window.requestAnimationFrame = (callback) => ask.call(window, (t) => {
        times.frames.push(performance.now());
        callback(t);
    });
    overview.applyDigest = (digest) => { times.digests.push(performance.now()); return apply.call(overview, digest); };
    setTimeout(() => {
        window.requestAnimationFrame = ask;
        overview.applyDigest = apply;
        resolve(times);
    }, ms);
})"""


def frames_between_digests(times, gap_ms=400, settle_ms=1000):
    """When the frames came that drew no new digest although one had come less than `gap_ms` before: what a change between two
    digests should have left to the next digest's frame. (Without a digest for that long, it may draw on its own.) The
    page's first `settle_ms` (times are performance.now(), from its opening) are not judged: a page just opened on a busy
    machine may still catch up with frames in a row."""
    events = sorted([(at, "digest") for at in times["digests"]] + [(at, "frame") for at in times["frames"]])
    extra, waiting, last_digest = [], False, float("-inf")
    for at, kind in events:
        if kind == "digest":
            waiting, last_digest = True, at
        elif waiting:
            waiting = False  # the frame that drew the digest
        elif at - last_digest < gap_ms and at >= settle_ms:
            extra.append(f"{at:.0f} ms, {at - last_digest:.0f} ms after a digest")
    return extra


@pytest_twisted.inlineCallbacks
def test_a_digest_costs_the_page_one_frame(fleet, pages):
    # Every frame is a style, layout, paint and commit pass of the whole page: a view that asked for another frame
    # while one drew it doubled them, and so did changes between two digests that took a frame of their own (level
    # alerts of a storm, the 1 s age tick, the analyzer loads, the feed). They ride on the digests' frames.
    # Joined before the page opens: a page that sees an orchestrator-role session join asks for a new snapshot.
    storm = yield join(fleet.router.rawsocket_url, "orchestrator", "fleet-storm",
                       fleet.router.ticket("orchestrator", "fleet-storm"))
    page = yield open_overview(pages, fleet.router.http_url, FLEET)
    watcher = yield operator(fleet.router, "fleet-storm-hosts")
    hosts = sorted((yield wait_for_hosts(watcher, FLEET))["hosts"])
    yield watcher.leave()
    sent = 0

    def level_alert():
        # A host raised to HIGH between two digests (the next digest that carries it settles it again).
        nonlocal sent
        host = hosts[sent % len(hosts)]
        sent += 1
        storm.publish(f"nerve.alert.{host}", {"host_id": host, "hostname": host, "metric": "cpu", "previous": "LOW",
                                              "level": "HIGH", "value": 99.0, "ts": time.time()})

    beats = task.LoopingCall(level_alert)
    beats.start(0.02)
    try:
        times = yield page.evaluate(TIME_FRAMES, 6000)
    finally:
        beats.stop()
        yield storm.leave()
    assert sent >= 150 and len(times["digests"]) >= 12, (sent, len(times["digests"]))
    extra = frames_between_digests(times)
    assert len(extra) <= 1, (extra, len(times["frames"]), len(times["digests"]))


@pytest_twisted.inlineCallbacks
def test_header_counts_equal_the_digests_levels(fleet, pages):
    session, levels = yield digest_levels(fleet.router, "fleet-counts")
    page = yield open_overview(pages, fleet.router.http_url, FLEET)
    # Live, both follow the same digests; the header must agree within a frame of each.
    for _ in range(3):
        deadline = time.monotonic() + 5
        while True:
            header = yield page.evaluate(HEADER_COUNTS)
            expected = counted(levels)
            if all(header.get(key, 0) == value for key, value in expected.items()):
                break
            assert time.monotonic() < deadline, (header, expected)
            yield sleep(0.05)
        yield sleep(0.5)
    # The fleet stops measuring: the levels settle, and the header equals the digest's exactly (every level key it
    # carries, including DOWN or OFFLINE where the orchestrator reports them).
    yield threads.deferToThread(fleet.simulator.stop)
    yield sleep(2)
    expected = counted(levels)
    header = yield page.wait_for(f"(want) => {{ const h = ({HEADER_COUNTS})();"
                                 " return Object.entries(want).every(([k, v]) => h[k] === v) && h }", expected, timeout=5)
    assert header["total"] == len(levels) >= FLEET
    yield session.leave()


@pytest_twisted.inlineCallbacks
def test_levels_the_page_does_not_know_yet_are_counted_drawn_and_filterable(own_router, pages):
    # An orchestrator of the test's own (a real router, a backend session in the orchestrator role) reports levels
    # beyond the analysis: DOWN and OFFLINE from the alerts issue, and one no page knows yet.
    router = own_router
    orchestrator = yield join(router.rawsocket_url, "orchestrator", "fleet-orch", router.ticket("orchestrator", "fleet-orch"))
    now = time.time()
    levels = {f"lv-{k:03d}": level for k, level in
              enumerate(["LOW"] * 5 + ["HIGH"] * 2 + ["DOWN"] * 3 + ["OFFLINE"] * 4 + ["REBOOT"] + [None] * 2)}

    def entry(level):
        return {"level": level, "ts": now, "seq": 1, "stale": False, "cpu": 10.0, "mem": 20.0}

    # It answers in entries whatever the page asks (`table` too): the page takes either form.
    yield orchestrator.register(lambda recent=0, metric="cpu", table=False: {"ts": now, "schema": None, "hosts": {
        host: dict(entry(level), hostname=host) for host, level in levels.items() if level != "REBOOT"}},
        "nerve.snapshot")
    page = yield open_overview(pages, router.http_url, len(levels) - 1, scale=2)
    # The unknown level arrives in a digest after the snapshot.
    yield orchestrator.publish("nerve.digest", {"ts": time.time(), "lag": 0, "hosts": {"lv-014": entry("REBOOT")}})
    header = yield page.wait_for(f"() => {{ const h = ({HEADER_COUNTS})(); return h.REBOOT === 1 && h }}")
    assert header == {"total": 17, "DOWN": 3, "HIGH": 2, "MEDIUM": 0, "LOW": 5, "OFFLINE": 4, "REBOOT": 1,
                      "none": 2, "stale": 0}, header
    order = yield page.evaluate("() => [...document.querySelectorAll('#summary [data-count]')].map((e) => e.dataset.count)")
    assert order == ["total", "DOWN", "REBOOT", "HIGH", "MEDIUM", "LOW", "OFFLINE", "none", "stale"], order
    # Tiles (17 hosts) in their level colours, and the DOWN filter shows exactly the DOWN hosts.
    colours = yield page.wait_for("""() => document.querySelectorAll('#tiles li').length === 17
        && Object.fromEntries([...document.querySelectorAll('#tiles li')]
        .map((li) => [li.dataset.level, getComputedStyle(li.querySelector('.badge')).backgroundColor]))""")
    assert len({colours[level] for level in ("DOWN", "OFFLINE", "REBOOT", "HIGH", "LOW")}) == 5, colours
    yield page.do(lambda p: p.select_option("#overview-controls select[name='level']", "DOWN"))
    shown = yield page.wait_for("() => { const t = [...document.querySelectorAll('#tiles li')];"
                                " return t.length === 3 && t.map((li) => li.dataset.host) }")
    assert sorted(shown) == ["lv-007", "lv-008", "lv-009"]
    # The same hosts on the map, drawn at the device pixel ratio (2 here): every cell in its level's colour.
    yield page.do(lambda p: p.select_option("#overview-controls select[name='level']", "all"))
    yield page.do(lambda p: p.select_option("#overview-controls select[name='view']", "map"))
    yield page.wait_for("() => window.nerve.overview.mode === 'map' && window.nerve.overview.drawnHosts === 17")
    backing = yield page.evaluate("() => { const c = window.nerve.overview.map.canvas;"
                                  " return [c.width, c.getBoundingClientRect().width, window.devicePixelRatio] }")
    assert backing[2] == 2 and backing[0] == round(backing[1] * 2), backing
    drawn = yield page.evaluate(MAP_PIXELS)
    assert drawn["cells"] == 17 and drawn["wrongCount"] == 0, drawn
    # A DOWN host's detail says DOWN (not its last analysis' level), an OFFLINE one OFFLINE; a reporting host
    # without an analysis yet shows no level.
    for host, level in (("lv-007", "DOWN"), ("lv-010", "OFFLINE"), ("lv-000", "")):
        yield page.evaluate(f"() => {{ window.location.hash = '#/host/{host}'; }}")
        badge = yield page.wait_for(f"() => {{ const b = document.querySelector('[data-detail=level]');"
                                    f" return document.querySelector('[data-detail=id]').textContent === '{host}'"
                                    f" && b.textContent === '{level}' && [b.textContent, b.dataset.level] }}",
                                    timeout=5)
        assert badge == [level, level]
    assert page.errors() == [], page.console
    yield orchestrator.leave()


@pytest_twisted.inlineCallbacks
def test_a_page_opened_on_5000_hosts_draws_them_all_on_one_canvas(tmp_path, pages):
    # No analyzer (levels stay N/A): the test is about the page holding the fleet, and the machine is shared.
    hosts = 5000
    fleet = yield threads.deferToThread(Fleet, tmp_path / "fleet-5000", hosts, "2", False)
    try:
        watcher = yield operator(fleet.router, "fleet-5000-watch")
        yield wait_for_hosts(watcher, hosts, timeout=40)
        page = yield open_overview(pages, fleet.router.http_url, hosts)
        state = yield page.evaluate("() => ({mode: window.nerve.overview.mode, cells: window.nerve.overview.map.cells.length,"
                                    " total: Number(document.querySelector('#summary [data-count=\"total\"]').textContent)})")
        assert state == {"mode": "map", "cells": hosts, "total": hosts}, state
        assert (yield page.evaluate(DOM_SIZE)) < 1500
        cell = yield page.wait_for(CELL_CENTRE, "sim-4999")
        yield page.do(lambda p: p.mouse.move(cell["x"], cell["y"]))
        # The schema's labels, even where the snapshot is too large for the router to send to an anonymous page.
        card = yield page.wait_for("() => { const t = document.querySelector('#fleet-card').textContent;"
                                   " return /sim-4999/.test(t) && t }")
        assert "CPU " in card and "Memory used " in card, card
        assert page.errors() == [], page.console
        yield watcher.leave()
    finally:
        yield threads.deferToThread(fleet.stop)


STORM_FRAMES = """() => {
    window.__frames = [];
    const tick = (t) => { window.__frames.push(t); if (window.__frames.length < 100000) requestAnimationFrame(tick); };
    requestAnimationFrame(tick);
}"""
FEED_GROUPS = "() => [...document.querySelectorAll('#alerts-panel .alert-group')]"


@pytest_twisted.inlineCallbacks
def test_an_alert_storm_keeps_the_feed_bounded_live_and_redraws_only_the_groups_it_touched(own_router, pages):
    router = own_router
    keeper = yield join(router.rawsocket_url, "alerts", "storm-keeper", router.ticket("alerts", "storm-keeper"))
    page = yield pages(router.http_url)
    yield page.wait_for("() => window.nerve && window.nerve.alerts.session")
    yield page.evaluate(STORM_FRAMES)
    now, hosts, per_host = time.time(), 600, 5

    def record(host, metric, at, state="firing"):
        return {"id": f"storm-{host:03d}/{metric}/{int(at * 1000)}", "host_id": f"storm-{host:03d}",
                "hostname": f"storm-{host:03d}", "metric": metric, "level": "HIGH", "previous": "LOW", "value": 97.0,
                "ts": at, "opened_at": at, "status": "firing", "state": state, "acked_by": None, "acked_at": None,
                "ack_comment": None, "silenced_by": None, "resolved_at": None, "updated_at": at,
                "url": f"/#/host/storm-{host:03d}"}

    metrics = ["cpu", "mem", "disk_used", "load_1", "net_recv"]
    for index in range(hosts * per_host):  # 3,000 records as fast as the keeper can publish them
        host, metric = index % hosts, metrics[index // hosts]
        keeper.publish("nerve.alerts.changed", record(host, metric, now + index / 1000))
    counts = yield page.wait_for("() => { const t = document.querySelector('#alert-counts').textContent;"
                                 " return /^3000 firing/.test(t) && t }", timeout=20)
    assert "30 of 600 hosts shown" in counts, counts
    groups = yield page.evaluate(f"() => ({FEED_GROUPS})().map((g) => g.dataset.group)")
    # Newest first: the hosts whose last record came last lead, and the feed stays at 30 groups of 4 rows.
    assert len(groups) == 30 and groups[:3] == ["storm-599", "storm-598", "storm-597"], groups
    rows = yield page.evaluate("() => document.querySelectorAll('#alerts-panel .alert-record').length")
    assert rows == 30 * 4
    # The page never froze: no gap between animation frames over a second while the storm came in.
    worst = yield page.evaluate("() => Math.max(...window.__frames.slice(1).map((t, i) => t - window.__frames[i]))")
    assert worst < 1000, f"a frame waited {worst:.0f} ms during the storm"
    # One host's alert is acknowledged: its group goes first, every other group keeps its node.
    yield page.evaluate(f"() => {{ window.__before = new Set(({FEED_GROUPS})()); }}")
    acked = dict(record(590, "net_recv", now + (4 * hosts + 590) / 1000), state="acknowledged", acked_by="op",
                 acked_at=now + 10, updated_at=now + 10)
    keeper.publish("nerve.alerts.changed", acked)
    kept = yield page.wait_for(f"""() => {{ const g = ({FEED_GROUPS})();
        return g[0].dataset.group === 'storm-590' && g.filter((n) => window.__before.has(n)).length }}""", timeout=5)
    assert kept == 29, kept
    assert page.errors() == [], page.console
    yield keeper.leave()
