"""Takes the dashboard screenshots in docs/: the tiles of a small fleet, the map of a large one, a host's detail.

    .venv/bin/python docs/screenshots.py [--only overview|fleet|detail]

Each shot runs its own router, orchestrator, analyzer, alert keeper and simulator, opens the page in headless Chromium at
1280 x 800 (device scale 1) and saves the PNG next to this script.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))

from bench.common import CHROMIUM_FLAGS  # noqa: E402
from components.testing.live import ComponentProcess, RouterProcess  # noqa: E402

# name: (simulated hosts, what to do on the page before the shot, file)
SHOTS = {
    "overview": (50, None, "overview.png"),
    "fleet": (5000, "hover", "fleet.png"),
    "detail": (10, "detail", "host-detail.png"),
}
DETAIL_HOST = "sim-0003"


def shoot(name):
    """One screenshot with its own mesh."""
    from playwright.sync_api import sync_playwright

    hosts, action, filename = SHOTS[name]
    workdir = Path(tempfile.mkdtemp(prefix=f"nerve-shot-{name}-"))
    router = RouterProcess(workdir).start()
    processes = [ComponentProcess(router, "orchestrator"), ComponentProcess(router, "analyzer", "--authid", "analyzer-1"),
                 ComponentProcess(router, "alerts", "--data-dir", str(workdir / "data")),
                 ComponentProcess(router, "tracker", "--hosts", str(hosts), "--interval", "1")]
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_FLAGS)
            page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            page.goto(router.http_url)
            page.wait_for_function("(n) => window.nerve && window.nerve.overview.drawnHosts >= n", arg=hosts, timeout=60000)
            time.sleep(12)  # a few analyses, so levels have settled and sparklines have some history
            if action == "hover":
                cell = page.evaluate("""() => { const o = window.nerve.overview, host = o.map.cells[o.map.cells.length >> 3];
                    const c = o.map.cellOf(host), box = o.map.canvas.getBoundingClientRect();
                    return {x: box.left + c.x + c.size / 2, y: box.top + c.y + c.size / 2}; }""")
                page.mouse.move(cell["x"], cell["y"])
                page.wait_for_function("() => !document.querySelector('#fleet-card').hidden")
            elif action == "detail":
                page.evaluate(f"() => {{ window.location.hash = '#/host/{DETAIL_HOST}'; }}")
                page.wait_for_function("() => document.querySelectorAll('#detail-view .uplot').length > 0"
                                       " && document.querySelector('.range-picker')", timeout=30000)
                time.sleep(3)  # a few live points after the backfill
            page.screenshot(path=str(DOCS / filename))
            browser.close()
        print(f"wrote {DOCS / filename}")
    finally:
        for process in processes:
            process.stop()
        router.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(SHOTS), help="take one screenshot only")
    args = parser.parse_args()
    for name in [args.only] if args.only else SHOTS:
        shoot(name)


if __name__ == "__main__":
    main()
