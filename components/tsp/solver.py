"""The solver: serves nerve.tsp.solve by farming rounds of nerve.tsp.anneal calls out to whatever compute instances are up.

Each round sends one call per connected instance (found through the meta API, so instances
that join or leave mid-solve are used or dropped from the next round), every call starting
from the best tour so far with its own seed and the round's slice of one geometric cooling
schedule spread over the budget. The best result of a round becomes the next start.
"""

import math
import re
import time
import uuid
from dataclasses import dataclass

from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer, reactor, task
from twisted.logger import Logger

from components.mesh.config import MeshConfig
from components.mesh.decorators import procedure
from components.mesh.errors import ConfigError, InvalidArgument, NotFound, Unavailable
from components.tsp.core import Problem, check_cities, check_tour, nearest_neighbour_tour, parse_tsplib, tour_length

log = Logger(namespace="nerve.solver")
SOLVE_URI = "nerve.tsp.solve"
ANNEAL_URI = "nerve.tsp.anneal"
PROGRESS_TOPIC = "nerve.tsp.progress."
BACKPRESSURE_ERRORS = ("crossbar.error.max_concurrency_reached",)
NO_INSTANCE_ERRORS = ("wamp.error.no_such_procedure", "wamp.error.no_such_registration")
FATAL_ERRORS = (InvalidArgument.uri, "wamp.error.not_authorized", "wamp.error.invalid_argument")
SOLVE_ID = re.compile(r"^[a-z0-9_-]{1,64}$")
MIN_ROUND_SECONDS = 0.15
MOVES_PER_SECOND_CAP = 20_000_000   # the iteration budget of a call: above what one core does, so time is what bounds it


@dataclass(frozen=True)
class SolverConfig:
    """Solver settings: budget and size limits, the length of one round, solves served at once."""

    mesh: MeshConfig
    max_budget: float = 300.0
    max_cities: int = 2000
    round_seconds: float = 1.0
    max_solves: int = 4
    wait_for_instances: float = 3.0

    def __post_init__(self):
        if not 0 < self.max_budget <= 86400:
            raise ConfigError(f"max budget must be between 0 and 86400 seconds, got {self.max_budget}")
        if not 3 <= self.max_cities <= 20000:
            raise ConfigError(f"max cities must be between 3 and 20000, got {self.max_cities}")
        if not 0.2 <= self.round_seconds <= 30:
            raise ConfigError(f"round seconds must be between 0.2 and 30, got {self.round_seconds}")
        if not 1 <= self.max_solves <= 64:
            raise ConfigError(f"max solves must be between 1 and 64, got {self.max_solves}")
        if not 0 <= self.wait_for_instances <= 60:
            raise ConfigError(f"wait for instances must be between 0 and 60 seconds, got {self.wait_for_instances}")


def sleep(seconds):
    """A Deferred firing after seconds."""
    return task.deferLater(reactor, seconds, lambda: None)


class Solve:
    """The state of one nerve.tsp.solve call."""

    def __init__(self, problem, budget, seed, solve_id, optimum):
        self.problem = problem
        self.budget = budget
        self.seed = seed
        self.solve_id = solve_id
        self.optimum = optimum
        self.best = nearest_neighbour_tour(problem.dist)
        self.best_length = tour_length(self.best, problem.dist)
        self.start_length = self.best_length
        self.rounds = 0
        self.moves = 0
        self.calls = 0
        self.retries = 0
        self.backpressure = 0
        self.instances = set()        # every instance that served a call of this solve
        self.holding = set()          # sessions known to hold the problem in their cache
        self.started = time.monotonic()
        self.deadline = self.started + budget
        self.t_start, self.t_end = problem.default_temperatures()

    def elapsed(self):
        """Seconds since the solve began."""
        return time.monotonic() - self.started

    def temperature(self, fraction):
        """The schedule's temperature at a fraction of the budget."""
        return self.t_start * (self.t_end / self.t_start) ** min(max(fraction, 0.0), 1.0)

    def gap(self, length):
        """Percent above the known optimum, or None."""
        return round(100.0 * (length - self.optimum) / self.optimum, 3) if self.optimum else None

    def event(self, kind, **extra):
        """A progress payload: everything a page needs to draw the current best route."""
        payload = {"kind": kind, "solve_id": self.solve_id, "n": self.problem.n, "round": self.rounds,
                   "length": self.best_length, "start_length": self.start_length, "tour": self.best.tolist(),
                   "elapsed": round(self.elapsed(), 3), "budget": self.budget, "moves": self.moves,
                   "instances_used": len(self.instances)}
        if self.optimum:
            payload.update(optimum=self.optimum, gap=self.gap(self.best_length))
        payload.update(extra)
        return payload


class Solver:
    """Registers nerve.tsp.solve; runs each solve as rounds of parallel nerve.tsp.anneal calls."""

    def __init__(self, config, mesh):
        self.config = config
        self.mesh = mesh
        self.active = 0

    @procedure(SOLVE_URI, invoke="roundrobin", concurrency=lambda config: config.max_solves)
    @defer.inlineCallbacks
    def solve(self, cities=None, budget=10.0, tsplib=None, seed=None, solve_id=None, details=None):
        """Solve the TSP of cities ([[x, y], ...]) or TSPLIB text in budget seconds: {tour, length, rounds, instances}."""
        problem, optimum = self._problem(cities, tsplib)
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) \
                or not 0 < budget <= self.config.max_budget:
            raise InvalidArgument(f"budget must be more than 0 and at most {self.config.max_budget:g} seconds "
                                  f"(the solver's --max-budget), got {budget!r}")
        if seed is None:
            seed = int.from_bytes(uuid.uuid4().bytes[:4], "big")
        elif isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InvalidArgument(f"seed must be a non-negative integer, got {seed!r}")
        if solve_id is None:
            solve_id = uuid.uuid4().hex[:12]
        elif not isinstance(solve_id, str) or not SOLVE_ID.match(solve_id):
            raise InvalidArgument(f"solve_id must be 1-64 characters of a-z, 0-9, '_' or '-', got {solve_id!r}")
        progress = getattr(details, "progress", None)
        state = Solve(problem, float(budget), seed, solve_id, optimum)
        self.active += 1
        log.info("solve {id}: {n} cities, budget {budget} s", id=solve_id, n=problem.n, budget=budget)
        try:
            self._emit(state, progress, state.event("start", cities=problem.coords.tolist(), temperature=state.t_start))
            # Three cities have one tour: there is nothing to farm out.
            if problem.n > 3:
                yield self._wait_for_instances(state)
            while problem.n > 3:
                remaining = state.deadline - time.monotonic()
                if remaining < MIN_ROUND_SECONDS:
                    break
                callees = yield self.callees()
                if not callees:
                    yield sleep(0.25)  # every instance left: hold until one comes back or the budget is spent
                    continue
                yield self._round(state, callees, remaining, progress)
        except defer.CancelledError:
            # The caller cancelled or left: its pending anneal calls were cancelled with it (and so interrupted).
            log.info("solve {id} cancelled by its caller after {rounds} rounds", id=solve_id, rounds=state.rounds)
            raise Unavailable(f"solve {solve_id} was cancelled by its caller") from None
        finally:
            self.active -= 1
        result = {"tour": state.best.tolist(), "length": state.best_length, "rounds": state.rounds,
                  "instances": len(state.instances), "solve_id": solve_id, "moves": state.moves,
                  "seconds": round(state.elapsed(), 3), "start_length": state.start_length, "calls": state.calls,
                  "retries": state.retries, "backpressure": state.backpressure, "seed": seed}
        if optimum:
            result.update(optimum=optimum, gap=state.gap(state.best_length))
        self.mesh.publish(PROGRESS_TOPIC + solve_id, state.event("done", temperature=state.t_end), retain=True)
        log.info("solve {id}: length {length} after {rounds} rounds on {k} instances",
                 id=solve_id, length=state.best_length, rounds=state.rounds, k=len(state.instances))
        return result

    def _problem(self, cities, tsplib):
        """The Problem and its known optimum from either cities or TSPLIB text."""
        if (cities is None) == (tsplib is None):
            raise InvalidArgument("give either cities=[[x, y], ...] or tsplib=<TSPLIB file text>, not both or neither")
        optimum = None
        if tsplib is not None:
            if not isinstance(tsplib, str):
                raise InvalidArgument("tsplib must be the text of a TSPLIB file")
            parsed = parse_tsplib(tsplib)
            cities, optimum = parsed.cities, parsed.optimum
        return Problem(check_cities(cities, self.config.max_cities)), optimum

    def _emit(self, state, progress, payload):
        """Send a progress payload to the caller (when it asked for progress) and publish it for everyone else."""
        if progress is not None:
            progress(payload)
        # Retained: a page that subscribes to one solve's exact topic late still gets the current best at once.
        self.mesh.publish(PROGRESS_TOPIC + state.solve_id, payload, retain=True)

    @defer.inlineCallbacks
    def callees(self):
        """Session ids of the compute instances registered for nerve.tsp.anneal now."""
        try:
            registration = yield self.mesh.call("wamp.registration.lookup", ANNEAL_URI, {"match": "exact"}, timeout=5)
            if registration is None:
                return []
            sessions = yield self.mesh.call("wamp.registration.list_callees", registration, timeout=5)
        except ApplicationError as error:
            if error.error in NO_INSTANCE_ERRORS:
                return []  # the last instance left between the two calls
            raise
        except defer.CancelledError:
            return []
        return list(sessions or [])

    @defer.inlineCallbacks
    def _wait_for_instances(self, state):
        """Wait a little for a first compute instance; none at all is an error the caller can act on."""
        limit = time.monotonic() + min(self.config.wait_for_instances, state.budget)
        while True:
            callees = yield self.callees()
            if callees:
                return callees
            if time.monotonic() >= limit:
                raise Unavailable(f"no compute instance serves {ANNEAL_URI}; start one with `nerve compute`")
            yield sleep(0.2)

    @defer.inlineCallbacks
    def _round(self, state, callees, remaining, progress):
        """One round: a call per instance from the current best tour; keep the best result."""
        seconds = min(self.config.round_seconds, remaining)
        if remaining - seconds < 0.5 * self.config.round_seconds:
            seconds = remaining  # no stub of a last round: stretch this one to the deadline
        fraction = state.elapsed() / state.budget
        t_high = state.temperature(fraction)
        t_low = state.temperature(fraction + seconds / state.budget)
        send_cities = not set(callees) <= state.holding
        began = time.monotonic()
        calls = []
        for index in range(len(callees)):
            seed = (state.seed * 1_000_003 + state.rounds * 1009 + index) % 2 ** 31
            calls.append(self._call(state, dict(
                tour=state.best.tolist(), t_start=t_high, t_end=t_low, seed=seed, seconds=round(seconds, 3),
                iterations=int(seconds * MOVES_PER_SECOND_CAP) + 1, problem_id=state.problem.id), send_cities))
        outcomes = yield defer.DeferredList(calls, consumeErrors=True)
        served, moves = [], 0
        for ok, value in outcomes:
            if not ok:
                value.raiseException()  # a fatal error (bad arguments): the solve fails with it
            if value is None:
                continue
            served.append(value["instance"])
            moves += value["moves"]
            # Re-measured with our own distances: a result counts only as the tour it proves.
            tour = check_tour(value["tour"], state.problem.n, "an instance's tour")
            length = tour_length(tour, state.problem.dist)
            if length < state.best_length:
                state.best, state.best_length = tour, length
        state.rounds += 1
        state.moves += moves
        state.instances.update(served)
        wall = time.monotonic() - began
        self._emit(state, progress, state.event(
            "round", temperature=round(t_low, 4), instances=len(served), callees=len(callees), served_by=sorted(served),
            round_seconds=round(wall, 3), moves_per_second=round(moves / wall) if wall > 0 else 0))

    @defer.inlineCallbacks
    def _call(self, state, arguments, send_cities):
        """One anneal call, retried on backpressure, a lost or missing instance or an uncached problem; None if time ran out."""
        backoff = 0.02
        while True:
            late = time.monotonic() - state.deadline
            if late > self.config.round_seconds:
                return None
            if late > 0:
                arguments["seconds"] = MIN_ROUND_SECONDS  # a retry after the deadline only finishes the round
            payload = dict(arguments, cities=state.problem.coords.tolist()) if send_cities else arguments
            timeout = arguments["seconds"] * 3 + 5
            timed_out = []
            call = self.mesh.call(ANNEAL_URI, **payload)
            # Caller-side timeout by cancelling: a router-side timeout would leak the callee's concurrency slot.
            timer = reactor.callLater(timeout, lambda: (timed_out.append(True), call.cancel()))
            state.calls += 1
            try:
                result = yield call
            except defer.CancelledError:
                if not timed_out:
                    raise  # the solve itself was cancelled (its caller left): stop, don't retry
                log.warn("solve {id}: an anneal call timed out after {t} s; retrying", id=state.solve_id, t=timeout)
                state.retries += 1
                continue
            except ApplicationError as error:
                wait, backoff, resend = self._retry_after(state, error, backoff)
                send_cities = send_cities or resend
                if wait:
                    yield sleep(wait)
                continue
            finally:
                if timer.active():
                    timer.cancel()
            if result.get("session") is not None:
                state.holding.add(result["session"])
            return result

    def _retry_after(self, state, error, backoff):
        """How to retry an anneal call that failed with error: (seconds to wait, next backoff, resend the cities).

        Raises the error when retrying cannot help.
        """
        uri = error.error
        if uri in BACKPRESSURE_ERRORS:
            # Every instance is busy (other solves, or a retry racing this round): wait for a free slot.
            state.backpressure += 1
            return backoff, min(backoff * 2, 0.25), False
        state.retries += 1
        if uri == NotFound.uri:
            return 0, backoff, True  # an instance that dropped the problem from its cache
        if uri in FATAL_ERRORS:
            raise error
        if uri in NO_INSTANCE_ERRORS:
            return 0.25, backoff, False
        # wamp.error.canceled: the instance died mid-call; the next one in the round robin takes it.
        log.info("solve {id}: anneal call failed ({uri}: {message}); retrying",
                 id=state.solve_id, uri=uri, message=error.error_message())
        return 0.05, backoff, False
