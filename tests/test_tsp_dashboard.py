"""The TSP page in headless Debian Chromium: a real router, one `nerve compute` and one `nerve solver` process.

Playwright runs on its own thread, as in test_dashboard.py (whose browser fixture this reuses).
"""

import pytest_twisted
from twisted.internet import defer

from components.testing.live import wait_for_callees
from tests import test_dashboard

browser = test_dashboard.browser  # the module's one headless Chromium, on its own thread
pytestmark = test_dashboard.pytestmark  # skipped without Debian chromium

CONNECTED = "() => window.tsp && window.tsp.connection.state === 'connected'"
SIGNIN_STATE = "() => { const s = document.querySelector('#tsp-signin-state');" \
               " return ['signed-in', 'refused'].includes(s.dataset.state) && [s.dataset.state, s.textContent] }"


@defer.inlineCallbacks
def sign_in(page, authid, ticket):
    """Fill the sign-in form and submit it; fires with (state, text) once the router answered."""
    yield page.do(lambda p: p.fill("#tsp-authid", authid))
    yield page.do(lambda p: p.fill("#tsp-ticket", ticket))
    yield page.do(lambda p: p.click("#tsp-signin-button"))
    answer = yield page.wait_for(SIGNIN_STATE, timeout=10)
    return answer


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
        # The instance's load row appears within its one-second publishing period (watching needs no sign-in).
        yield page.wait_for("() => { const r = document.querySelector(\"#compute-rows tr[data-instance='compute-web']\");"
                            " return r && !r.classList.contains('stale') && /%/.test(r.textContent) }", timeout=5)
        yield sign_in(page, "tsp-web-operator", router.ticket("operator", "tsp-web-operator"))

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


@pytest_twisted.inlineCallbacks
def test_tsp_page_solves_only_after_an_operator_signed_in(router, start, dashboard, browser):
    yield wait_for_callees(dashboard, "nerve.tsp.anneal", 0)
    start("compute", "--authid", "compute-signin")
    start("solver", "--authid", "solver-signin", "--max-budget", "30", "--round-seconds", "0.5")
    yield wait_for_callees(dashboard, "nerve.tsp.solve", 1)
    page = yield browser.run(browser._open, router.http_url + "tsp.html", 1280, 900)
    try:
        yield page.wait_for(CONNECTED, timeout=10)
        # Anonymous: the page asks for a sign-in, and the router refuses the solve to the anonymous session anyway.
        yield page.do(lambda p: p.fill("#tsp-budget", "1"))
        yield page.do(lambda p: p.click("#tsp-solve"))
        text = yield page.wait_for("() => { const m = document.querySelector('#tsp-message');"
                                   " return !m.hidden && m.textContent }", timeout=5)
        assert "Sign in" in text, text
        refused = yield page.evaluate("""async () => {
            try { await window.tsp.connection.session.call('nerve.tsp.solve', [], {cities: [[0, 0], [1, 1], [2, 0]], budget: 1});
                  return 'accepted'; }
            catch (error) { return error.error; } }""")
        assert refused == "wamp.error.not_authorized"

        # A wrong ticket is refused, naming the authid; nothing is solved.
        state, text = yield sign_in(page, "tsp-intruder", "0" * 64)
        assert state == "refused" and "tsp-intruder" in text and "not_authenticated" in text, text

        # The right one: signed in as an operator (the role found from the ticket alone), and the solve runs.
        state, text = yield sign_in(page, "tsp-signin-op", router.ticket("operator", "tsp-signin-op"))
        assert state == "signed-in" and "tsp-signin-op" in text and "operator" in text, text
        assert (yield page.evaluate("() => document.querySelector('#tsp-ticket').value")) == ""
        yield page.do(lambda p: p.select_option("#tsp-n", "30"))
        yield page.do(lambda p: p.click("#tsp-solve"))
        final = yield page.wait_for("() => { const f = document.querySelector('#tsp-final').textContent;"
                                    " return f !== '–' && f }", timeout=10)
        assert float(final.replace(",", "")) > 0

        # Signing out takes the right to solve away again.
        yield page.do(lambda p: p.click("#tsp-signout"))
        yield page.wait_for("() => document.querySelector('#tsp-signin-state').dataset.state === 'signed-out'")
        yield page.do(lambda p: p.click("#tsp-solve"))
        text = yield page.wait_for("() => { const m = document.querySelector('#tsp-message');"
                                   " return /Sign in/.test(m.textContent) && m.textContent }", timeout=5)
        assert page.errors() == [], page.console
    finally:
        yield page.close()
