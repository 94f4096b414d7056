"""A compute instance: a shared round-robin callee of nerve.tsp.anneal; start as many as you like, anywhere."""

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import psutil
from twisted.internet import defer, reactor, threads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from components.mesh.config import MeshConfig, uri_safe
from components.mesh.decorators import every, procedure
from components.mesh.errors import ConfigError, InvalidArgument, NotFound
from components.tsp.core import Problem, anneal, check_cities, check_tour
from components.tsp.core import problem_id as problem_id_of

log = Logger(namespace="nerve.compute")
ANNEAL_URI = "nerve.tsp.anneal"
LOAD_TOPIC = "nerve.compute."
MAX_ITERATIONS = 10 ** 9
MAX_CALL_SECONDS = 60.0


@dataclass(frozen=True)
class ComputeConfig:
    """Compute instance settings: problems kept in the cache and the largest problem accepted."""

    mesh: MeshConfig
    cache_size: int = 16
    max_cities: int = 2000

    def __post_init__(self):
        if not 1 <= self.cache_size <= 1000:
            raise ConfigError(f"cache size must be between 1 and 1000 problems, got {self.cache_size}")
        if not 3 <= self.max_cities <= 20000:
            raise ConfigError(f"max cities must be between 3 and 20000, got {self.max_cities}")


def _number(name, value, low, high):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise InvalidArgument(f"{name} must be a number between {low} and {high}, got {value!r}")
    return value


class Compute:
    """Runs one annealing call at a time in a worker thread; caches problems by id; publishes its load every second."""

    def __init__(self, config, mesh):
        self.config = config
        self.mesh = mesh
        self.instance = uri_safe(config.mesh.authid)
        self.problems = OrderedDict()
        self.calls = 0
        self.moves = 0            # moves evaluated since start, updated by the worker after every numpy pass
        self.busy = False
        self.lock = threading.Lock()
        self.process = psutil.Process()
        self.process.cpu_percent()  # the first reading is always 0: prime it
        self.last_tick = (time.monotonic(), 0)
        # One worker thread: the router's concurrency=1 and this pool both keep calls one at a time,
        # so a call the caller cancelled can still be finishing when the next arrives without overlapping it.
        self.pool = ThreadPool(minthreads=1, maxthreads=1, name="anneal")
        self.pool.start()
        reactor.addSystemEventTrigger("during", "shutdown", self.pool.stop)

    def problem(self, problem_id, cities):
        """The cached Problem for problem_id, built from cities when they are given."""
        if cities is not None:
            coords = check_cities(cities, self.config.max_cities)
            own_id = problem_id_of(coords)
            if problem_id is not None and problem_id != own_id:
                raise InvalidArgument(f"problem_id {problem_id!r} does not match the cities (their id is {own_id})")
            problem = self.problems.get(own_id)
            if problem is None:
                problem = self.problems[own_id] = Problem(coords)
                while len(self.problems) > self.config.cache_size:
                    self.problems.popitem(last=False)
            self.problems.move_to_end(own_id)
            return problem
        if problem_id is None:
            raise InvalidArgument("give cities, or the problem_id of cities sent to this instance before")
        problem = self.problems.get(problem_id)
        if problem is None:
            raise NotFound(f"problem {problem_id} is not cached on {self.instance}; send its cities with the call")
        self.problems.move_to_end(problem_id)
        return problem

    @procedure(ANNEAL_URI, invoke="roundrobin", concurrency=1)
    def anneal(self, tour, t_start, t_end, iterations, problem_id=None, cities=None, seed=0, seconds=None):
        """Anneal from tour cooling t_start..t_end for at most iterations moves and seconds; returns the best tour found."""
        problem = self.problem(problem_id, cities)
        start = check_tour(tour, problem.n)
        _number("t_start", t_start, 1e-9, 1e12)
        _number("t_end", t_end, 1e-9, 1e12)
        _number("iterations", iterations, 1, MAX_ITERATIONS)
        if seconds is not None:
            _number("seconds", seconds, 0.001, MAX_CALL_SECONDS)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InvalidArgument(f"seed must be a non-negative integer, got {seed!r}")
        cancelled = threading.Event()
        done = defer.Deferred(lambda _: cancelled.set())  # a cancelled call stops the worker at its next pass
        work = threads.deferToThreadPool(reactor, self.pool, self._run, problem, start, float(t_start), float(t_end),
                                         int(iterations), seed, seconds, cancelled)
        work.chainDeferred(done)
        return done

    def _run(self, problem, start, t_start, t_end, iterations, seed, seconds, cancelled):
        with self.lock:
            self.busy = True
        try:
            result = anneal(problem, start, t_start, t_end, iterations, seed=seed, seconds=seconds,
                            should_stop=cancelled.is_set, on_batch=self._count)
        finally:
            with self.lock:
                self.busy = False
                self.calls += 1
        session = self.mesh.session
        return {"tour": result.tour.tolist(), "length": result.length, "start_length": result.start_length,
                "moves": result.moves, "accepted": result.accepted, "seconds": round(result.seconds, 4),
                "stopped": result.stopped, "instance": self.instance, "problem_id": problem.id,
                "session": session.session_id if session is not None else None}

    def _count(self, moves):
        # Runs in the worker: += on an int attribute under the GIL is enough for a counter read once a second.
        self.moves += moves

    @every(1.0)
    def publish_load(self):
        """Publish CPU %, moves per second and calls served on nerve.compute.<instance>."""
        now, moves = time.monotonic(), self.moves
        then, before = self.last_tick
        self.last_tick = (now, moves)
        rate = (moves - before) / (now - then) if now > then else 0.0
        self.mesh.publish(LOAD_TOPIC + self.instance, {
            "instance": self.instance, "ts": round(time.time(), 3), "cpu": round(self.process.cpu_percent(), 1),
            "moves_per_second": round(rate), "moves": moves, "calls": self.calls, "busy": self.busy,
            "problems_cached": len(self.problems)})
