"""The TSP compute mesh end to end: a real router, real `nerve compute` instances and a real `nerve solver`."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytest_twisted
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallOptions, SubscribeOptions
from twisted.internet import defer, threads

from components.testing.live import ComponentProcess, EventLog, join, sleep, wait_for_callees, wait_until
from components.tsp.core import Problem, load_tsplib, tour_length

DATA = Path(__file__).parent / "data"
BERLIN = load_tsplib(DATA / "berlin52.tsp")
ANNEAL = "nerve.tsp.anneal"


@pytest.fixture(scope="module")
def solver(router):
    """One solver for the module, with short rounds so a few seconds of budget hold several rounds."""
    process = ComponentProcess(router, "solver", "--authid", "solver-test", "--max-budget", "60", "--round-seconds", "0.5")
    yield process
    process.stop()


@defer.inlineCallbacks
def solver_ready(session, solver):
    """Wait until the solver's nerve.tsp.solve is registered."""
    yield wait_for_callees(session, "nerve.tsp.solve", 1)


@defer.inlineCallbacks
def start_instances(start, session, *authids):
    """Start compute instances (after the previous test's are gone) and wait until all serve nerve.tsp.anneal."""
    yield wait_for_callees(session, ANNEAL, 0)
    processes = [start("compute", "--authid", authid) for authid in authids]
    yield wait_for_callees(session, ANNEAL, len(authids))
    return processes


def assert_valid(result, cities):
    """The result's tour visits every city once and its length is the tour's EUC_2D length."""
    problem = Problem(cities)
    assert sorted(result["tour"]) == list(range(len(cities)))
    assert result["length"] == tour_length(result["tour"], problem.dist)


@defer.inlineCallbacks
def expect_error(call, uri, *fragments):
    """Assert that the call fails with uri and a message holding every fragment."""
    try:
        yield call
    except ApplicationError as error:
        assert error.error == uri, (error.error, error.error_message())
        for fragment in fragments:
            assert fragment in error.error_message(), error.error_message()
        return
    raise AssertionError(f"the call did not fail with {uri}")


@pytest_twisted.inlineCallbacks
def test_an_operator_solves_berlin52_with_progress_and_instance_load(router, solver, start, operator_session):
    yield solver_ready(operator_session, solver)
    yield start_instances(start, operator_session, "compute-a", "compute-b")
    published, loads = EventLog(), EventLog()
    options = SubscribeOptions(match="prefix", details_arg="details")
    yield operator_session.subscribe(published, "nerve.tsp.progress.", options=options)
    yield operator_session.subscribe(loads, "nerve.compute.", options=options)
    progress = []
    result = yield operator_session.call("nerve.tsp.solve", cities=BERLIN.cities, budget=5, seed=7, solve_id="berlin-test",
                                  options=CallOptions(on_progress=progress.append))
    assert_valid(result, BERLIN.cities)
    assert result["length"] <= BERLIN.optimum * 1.01, result["length"]
    assert result["instances"] == 2 and result["rounds"] >= 3
    kinds = [event["kind"] for event in progress]
    assert kinds[0] == "start" and len(progress[0]["cities"]) == 52
    rounds = [event for event in progress if event["kind"] == "round"]
    assert len(rounds) == result["rounds"]
    for event in rounds:
        assert sorted(event["tour"]) == list(range(52)) and event["temperature"] > 0
        assert event["solve_id"] == "berlin-test" and event["instances"] == 2
    assert [event["length"] for event in rounds] == sorted((event["length"] for event in rounds), reverse=True)
    yield wait_until(lambda: any(p["kind"] == "done" for p in published.payloads("nerve.tsp.progress.berlin-test")),
                     timeout=3, message="the done event on nerve.tsp.progress.berlin-test")
    assert published.payloads("nerve.tsp.progress.berlin-test")[-1]["length"] == result["length"]
    load = loads.payloads("nerve.compute.compute-a")
    assert load and {"cpu", "moves_per_second", "calls"} <= set(load[-1])
    assert max(event["moves_per_second"] for event in load) > 0 and load[-1]["calls"] >= 1


@pytest_twisted.inlineCallbacks
def test_bad_input_gives_nerve_errors_naming_the_problem(router, solver, operator_session):
    yield solver_ready(operator_session, solver)
    solve = "nerve.tsp.solve"
    square = [[0, 0], [1, 0], [1, 1], [0, 1]]
    invalid = "nerve.error.invalid_argument"
    yield expect_error(operator_session.call(solve, cities=[[0, 0], [1, 1]], budget=1), invalid, "at least 3 cities")
    yield expect_error(operator_session.call(solve, cities=square + [[1, 1]], budget=1), invalid, "same coordinates", "[2, 4]")
    yield expect_error(operator_session.call(solve, cities=[[0, 0], [1, "x"], [2, 2]], budget=1), invalid, "cities[1]",
                       "non-numeric")
    yield expect_error(operator_session.call(solve, cities=[[0, 0], [1], [2, 2]], budget=1), invalid, "cities[1]")
    yield expect_error(operator_session.call(solve, cities=square, budget=0), invalid, "budget", "got 0")
    yield expect_error(operator_session.call(solve, cities=square, budget=61), invalid, "budget", "at most 60")
    yield expect_error(operator_session.call(solve, cities=square, budget="10"), invalid, "budget")
    geo = (DATA / "berlin52.tsp").read_text().replace("EUC_2D", "GEO")
    yield expect_error(operator_session.call(solve, tsplib=geo, budget=1), invalid, "EDGE_WEIGHT_TYPE GEO", "EUC_2D")
    yield expect_error(operator_session.call(solve, budget=1), invalid, "cities")
    yield expect_error(operator_session.call(solve, cities=square, budget=1, bogus=1), invalid, "bogus")


@pytest_twisted.inlineCallbacks
def test_solve_without_any_instance_is_unavailable_unless_trivial(router, solver, operator_session):
    yield solver_ready(operator_session, solver)
    yield wait_for_callees(operator_session, ANNEAL, 0)
    yield expect_error(operator_session.call("nerve.tsp.solve", cities=BERLIN.cities, budget=0.5), "nerve.error.unavailable",
                       "nerve compute")
    triangle = yield operator_session.call("nerve.tsp.solve", cities=[[0, 0], [3, 0], [0, 4]], budget=1)
    assert sorted(triangle["tour"]) == [0, 1, 2] and triangle["length"] == 12 and triangle["rounds"] == 0


@pytest_twisted.inlineCallbacks
def test_anneal_caches_problems_and_checks_its_arguments(router, start, operator_session):
    yield start_instances(start, operator_session, "compute-cache")
    session = yield join(router.rawsocket_url, "solver", "solver-probe", router.ticket("solver", "solver-probe"))
    problem = Problem(BERLIN.cities)
    tour = list(range(52))
    first = yield session.call(ANNEAL, tour=tour, t_start=50.0, t_end=1.0, iterations=20000, seed=1,
                               problem_id=problem.id, cities=BERLIN.cities)
    assert first["instance"] == "compute-cache" and first["moves"] == 20000
    assert first["length"] < first["start_length"] == tour_length(tour, problem.dist)
    again = yield session.call(ANNEAL, tour=tour, t_start=50.0, t_end=1.0, iterations=20000, seed=1, problem_id=problem.id)
    assert again["tour"] == first["tour"], "the same seed on the cached problem gives the same tour"
    yield expect_error(session.call(ANNEAL, tour=tour, t_start=5.0, t_end=1.0, iterations=10, problem_id="p-unknown"),
                       "nerve.error.not_found", "p-unknown")
    yield expect_error(session.call(ANNEAL, tour=tour[:-1] + [0], t_start=5.0, t_end=1.0, iterations=10,
                                    problem_id=problem.id), "nerve.error.invalid_argument", "permutation")
    yield session.leave()


@pytest_twisted.inlineCallbacks
def test_killing_an_instance_mid_solve_loses_no_round(router, solver, start, operator_session):
    yield solver_ready(operator_session, solver)
    doomed, _ = yield start_instances(start, operator_session, "compute-doomed", "compute-survivor")
    progress = []
    solving = operator_session.call("nerve.tsp.solve", cities=BERLIN.cities, budget=5,
                             options=CallOptions(on_progress=progress.append))
    yield wait_until(lambda: [event for event in progress if event["kind"] == "round"], timeout=10, message="a first round")
    yield sleep(0.2)  # into the next 0.5 s round: both instances are busy with its calls
    yield threads.deferToThread(doomed.kill)  # SIGKILL: the instance gets no chance to finish or leave
    result = yield solving
    assert_valid(result, BERLIN.cities)
    rounds = [event for event in progress if event["kind"] == "round"]
    # Every call of every round came back with a result: the one lost with the instance was retried on the survivor.
    assert all(event["instances"] == event["callees"] for event in rounds), [(e["instances"], e["callees"]) for e in rounds]
    assert rounds[-1]["served_by"] == ["compute-survivor"]
    assert result["retries"] >= 1 and result["length"] <= BERLIN.optimum * 1.05


@pytest_twisted.inlineCallbacks
def test_an_instance_started_mid_solve_joins_the_next_rounds(router, solver, start, operator_session):
    yield solver_ready(operator_session, solver)
    yield start_instances(start, operator_session, "compute-first")
    progress = []
    solving = operator_session.call("nerve.tsp.solve", cities=BERLIN.cities, budget=8,
                             options=CallOptions(on_progress=progress.append))
    yield wait_until(lambda: [event for event in progress if event["kind"] == "round"], timeout=10, message="a first round")
    start("compute", "--authid", "compute-late")
    yield wait_for_callees(operator_session, ANNEAL, 2)
    assert not solving.called, "the solve ended before the late instance registered"
    result = yield solving
    assert_valid(result, BERLIN.cities)
    assert result["instances"] == 2
    rounds = [event for event in progress if event["kind"] == "round"]
    assert rounds[0]["served_by"] == ["compute-first"]
    assert any("compute-late" in event["served_by"] for event in rounds)


@pytest_twisted.inlineCallbacks
def test_cancelling_a_solve_stops_its_anneal_calls(router, solver, start, operator_session, watch_prefix):
    yield solver_ready(operator_session, solver)
    yield start_instances(start, operator_session, "compute-cancel")
    loads = yield watch_prefix("nerve.compute.compute-cancel")
    progress = []
    solving = operator_session.call("nerve.tsp.solve", cities=BERLIN.cities, budget=30,
                             options=CallOptions(on_progress=progress.append))
    solving.addErrback(lambda failure: failure.trap(defer.CancelledError))
    yield wait_until(lambda: [event for event in progress if event["kind"] == "round"], timeout=10, message="a first round")
    solving.cancel()
    cancelled_at = time.time()
    # The instance's call is interrupted within one numpy pass, not left running to the end of its round.
    yield wait_until(lambda: [load for load in loads.payloads() if load["ts"] > cancelled_at + 0.5 and not load["busy"]],
                     timeout=5, message="the instance idle after the cancel")
    result = yield operator_session.call("nerve.tsp.solve", cities=BERLIN.cities, budget=1)
    assert_valid(result, BERLIN.cities)


def test_cli_solve_prints_progress_length_and_gap(router, solver):
    instances = [ComponentProcess(router, "compute", "--authid", f"compute-cli-{index}") for index in range(2)]
    try:
        deadline = time.monotonic() + 20
        while not all("joined realm" in process.output() for process in instances) and time.monotonic() < deadline:
            time.sleep(0.1)
        result = subprocess.run([sys.executable, "-m", "components", "tsp", "solve", str(DATA / "berlin52.tsp"),
                                 "--budget", "3"], capture_output=True, text=True, env=router.env(), timeout=60)
    finally:
        for process in instances:
            process.stop()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("round") for line in lines), result.stdout
    final = lines[-1]
    assert final.startswith("berlin52: length ") and "optimum 7542" in final and "gap " in final, final


def test_cli_rejects_an_unsupported_edge_weight_type(tmp_path):
    geo = tmp_path / "geo.tsp"
    geo.write_text((DATA / "berlin52.tsp").read_text().replace("EUC_2D", "GEO"))
    result = subprocess.run([sys.executable, "-m", "components", "tsp", "solve", str(geo)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2 and "EDGE_WEIGHT_TYPE GEO is not supported" in result.stderr, result.stderr
