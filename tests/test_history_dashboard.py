"""The host detail's time ranges in headless Chromium: 1 h drawn from the recorder with a min–max band, drag to zoom."""

import os
import subprocess
import time

import numpy as np
import pytest
import pytest_twisted

from components.history.store import open_store
from components.testing.live import call_until, wait_for_callees
from tests.test_dashboard import browser, pages, pytestmark  # noqa: F401  (the module's Chromium fixtures and skip)
from tests.test_history_recorder import missing_from, recorded, recorder_in, simulator  # noqa: F401

HOST = "hist-dash"


def write_last_hours(data_dir, hours=2):
    """HOST's samples at 1 Hz for the last `hours`, written straight into the store as 2-minute blocks."""
    store = open_store(data_dir)
    now = time.time()
    start = (now - hours * 3600) // 120 * 120
    rng = np.random.default_rng(5)
    for block in np.arange(start, now - 120, 120):
        ts = block + np.arange(120)
        cpu = 50 + 30 * np.sin(ts / 600) + rng.normal(0, 5, 120)
        store.write_block(0, HOST, block, block + 120, ts, ["cpu", "mem"], np.array([cpu.clip(0, 100), np.full(120, 40.0)]))
    store.commit()
    store.close()


@pytest_twisted.inlineCallbacks
def test_picking_1_h_draws_the_chart_from_history_with_a_band_and_a_drag_zooms_to_seconds(
        router, start, pages, dashboard, tmp_path):
    write_last_hours(tmp_path)
    start("recorder", env={"NERVE_DATA_DIR": str(tmp_path)})
    yield wait_for_callees(dashboard, "nerve.history.range", 1)
    page = yield pages(f"{router.http_url}#/host/{HOST}")
    yield page.wait_for("() => document.querySelector(\"[data-range='1h']\")")
    yield page.do(lambda p: p.click("[data-range='1h']"))
    drawn = yield page.wait_for(
        "() => { const f = document.querySelector(\".chart[data-family='cpu'][data-source='history']\");"
        " return f && {step: f.dataset.step, points: Number(f.dataset.points), bands: f.querySelectorAll('canvas').length,"
        " status: document.querySelector(\"[data-detail='range-status']\").textContent,"
        " pressed: document.querySelector(\"[data-range='1h']\").getAttribute('aria-pressed')} }", timeout=15)
    assert drawn["step"] == "60" and 55 <= drawn["points"] <= 62, drawn
    assert "min–max" in drawn["status"] and drawn["pressed"] == "true", drawn
    legend = yield page.evaluate("() => [...document.querySelectorAll(\".chart[data-family='cpu'] .u-legend .u-label\")]"
                                 ".map(e => e.textContent)")
    assert legend[-2:] == [f"{legend[1]} min", f"{legend[1]} max"], legend  # the band's edges beside the mean

    box = yield page.evaluate("() => { const r = document.querySelector(\".chart[data-family='cpu'] .u-over\")"
                              ".getBoundingClientRect(); return {x: r.x, y: r.y, w: r.width, h: r.height} }")

    def drag(p):
        y = box["y"] + box["h"] / 2
        p.mouse.move(box["x"] + box["w"] * 0.5, y)
        p.mouse.down()
        p.mouse.move(box["x"] + box["w"] * 0.6, y, steps=5)
        p.mouse.move(box["x"] + box["w"] * 0.7, y, steps=5)
        p.mouse.up()

    yield page.do(drag)
    zoomed = yield page.wait_for(
        "() => { const f = document.querySelector(\".chart[data-family='cpu'][data-source='history'][data-step='1']\");"
        " return f && {points: Number(f.dataset.points),"
        " status: document.querySelector(\"[data-detail='range-status']\").textContent} }", timeout=15)
    assert 600 <= zoomed["points"] <= 900 and zoomed["status"].startswith("Zoomed"), zoomed
    yield page.do(lambda p: p.click("[data-range='live']"))
    yield page.wait_for("() => !document.querySelector(\".chart[data-source='history']\") && "
                        "document.querySelector(\"[data-detail='range-status']\").textContent === ''")
    assert page.errors() == [], page.console


@pytest.fixture
def small_filesystem(tmp_path):
    """A 3 MB tmpfs the test can fill; skipped where mounting is not permitted."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory):
    """Write a filler file until the file system refuses; its path."""
    filler = directory / "filler"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\xff" * 65536)
                handle.flush()
        except OSError:
            pass
    return filler


PANEL_LINE = "() => document.querySelector('[data-mesh-recorder]')?.dataset.recorder"


@pytest_twisted.inlineCallbacks
def test_a_full_disk_keeps_the_mesh_running_shows_on_the_mesh_panel_and_recording_resumes_when_space_returns(
        router, start, simulator, pages, dashboard, small_filesystem):
    recorder_in(start, small_filesystem)
    yield recorded(dashboard, time.time() - 5)
    page = yield pages(router.http_url)
    assert (yield page.wait_for(PANEL_LINE, timeout=10)) == "recording"
    filler = fill(small_filesystem)
    full = yield call_until(dashboard, "nerve.recorder.stats", lambda stats: stats["state"] == "disk full", timeout=60,
                            interval=0.5, message="the recorder to report a full disk")
    assert str(small_filesystem) in full["last_error"]["message"] and full["disk_free"] < 65536
    shown = yield page.wait_for(f"() => ({PANEL_LINE})() === 'disk full' && "
                                "document.querySelector('[data-mesh-recorder]').textContent", timeout=10)
    assert "disk full" in shown and str(small_filesystem) in shown, shown
    received = (yield dashboard.call("nerve.stats"))["received"]  # the mesh goes on
    yield call_until(dashboard, "nerve.stats", lambda stats: stats["received"] > received, timeout=10)
    os.remove(filler)
    freed = time.time()
    yield call_until(dashboard, "nerve.recorder.stats", lambda stats: stats["state"] == "recording", timeout=30,
                     interval=0.5, message="recording to resume")
    assert (yield page.wait_for(f"() => ({PANEL_LINE})() === 'recording' && ({PANEL_LINE})()", timeout=10)) == "recording"
    answer = yield call_until(dashboard, "nerve.history.range", lambda answer: answer["ts"] and answer["ts"][-1] > freed + 1,
                              "sim-0000", freed - 120, time.time() + 30, 1, timeout=30, interval=0.5)
    missing = yield missing_from(dashboard, answer, freed - 60, answer["ts"][-1])
    assert not missing, f"samples lost while the disk was full: {missing}"  # held in memory, written when space came
    assert page.errors() == [], page.console
