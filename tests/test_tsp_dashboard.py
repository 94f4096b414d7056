"""The TSP page in headless Debian Chromium: a real router, one `nerve compute` and one `nerve solver` process.

Playwright runs on its own thread, as in test_dashboard.py (whose browser fixture this reuses).
"""

import pytest_twisted

from components.testing.live import wait_for_callees
from tests import test_dashboard

browser = test_dashboard.browser  # the module's one headless Chromium, on its own thread
pytestmark = test_dashboard.pytestmark  # skipped without Debian chromium

CONNECTED = "() => window.tsp && window.tsp.connection.state === 'connected'"


@pytest_twisted.inlineCallbacks
def test_tsp_page_solves_live_shows_compute_load_and_budget_errors(router, start, dashboard, browser, tmp_path):
    # The module's other tests may have left instances: wait until they are gone, then start ours.
    yield wait_for_callees(dashboard, "nerve.tsp.anneal", 0)
    start("compute", "--authid", "compute-web")
    start("solver", "--authid", "solver-web", "--max-budget", "30", "--round-seconds", "0.5")
    yield wait_for_callees(dashboard, "nerve.tsp.anneal", 1)
    yield wait_for_callees(dashboard, "nerve.tsp.solve", 1)

    page = yield browser.run(browser._open, router.http_url + "tsp.html", 1280, 900)
    try:
        yield page.wait_for(CONNECTED, timeout=10)
        # The instance's load row appears within its one-second publishing period.
        yield page.wait_for("() => { const r = document.querySelector(\"#compute-rows tr[data-instance='compute-web']\");"
                            " return r && !r.classList.contains('stale') && /%/.test(r.textContent) }", timeout=5)

        # A 3 s solve on 30 random cities: the round counter moves during the solve, then the final length shows.
        yield page.do(lambda p: p.select_option("#tsp-n", "30"))
        yield page.do(lambda p: p.fill("#tsp-budget", "3"))
        yield page.do(lambda p: p.click("#tsp-solve"))
        yield page.wait_for("() => document.querySelector('#tsp-state').textContent === 'solving'"
                            " && Number(document.querySelector('#tsp-round').textContent) >= 1", timeout=5)
        drawn = yield page.evaluate("() => Number(document.querySelector('#tsp-canvas').dataset.drawn)")
        assert drawn >= 2
        final = yield page.wait_for("() => { const f = document.querySelector('#tsp-final').textContent;"
                                    " return f !== '–' && f }", timeout=8)
        assert float(final.replace(",", "")) > 0
        assert (yield page.evaluate("() => window.tsp.cities.length")) == 30
        message = yield page.evaluate("() => document.querySelector('#tsp-message').textContent")
        assert message.startswith("Solved"), message
        # Into the test's own directory: a run must not rewrite docs/tsp.png in the checkout.
        yield page.do(lambda p: p.screenshot(path=str(tmp_path / "tsp.png"), full_page=True))

        # An invalid budget: the solver's error is shown in the alert region, naming the budget.
        yield page.do(lambda p: p.fill("#tsp-budget", "0"))
        yield page.do(lambda p: p.click("#tsp-solve"))
        error = yield page.wait_for("() => { const m = document.querySelector('#tsp-message');"
                                    " return !m.hidden && m.dataset.state === 'error' && m.textContent }", timeout=5)
        assert "budget" in error and "invalid_argument" in error, error
        assert page.errors() == [], page.console

        # Phone width: no horizontal scrolling.
        yield page.do(lambda p: p.set_viewport_size({"width": 390, "height": 844}))
        overflow = yield page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0
    finally:
        yield page.close()
