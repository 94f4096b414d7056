"""Helpers for testing components against a real router: start it and components as processes, join as a client.

Used by nerve's own tests; a team writing components can use them the same way with
pytest-twisted (`pytest_twisted.blockon` in fixtures, `inlineCallbacks` in tests).
"""

import atexit
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autobahn.twisted.component import Component
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions
from twisted.internet import defer, reactor, task

from components.mesh import credentials
from components.mesh.config import MeshConfig
from components.node.routerctl import free_port, router_command, wait_for_port


_started = []  # the processes started here that may still run: Python's exit stops them (_stop_leftovers)


def _popen(command, **options):
    """subprocess.Popen in a session of its own, remembered so that Python's exit stops it if nothing else did."""
    _started[:] = [process for process in _started if process.poll() is None]
    process = subprocess.Popen(command, start_new_session=True, **options)
    _started.append(process)
    return process


@atexit.register
def _stop_leftovers(timeout=15):
    """SIGTERM what was started here and still runs, SIGKILL its process group after timeout seconds.

    A bench whose reactor stopped on SIGTERM, or a script that failed before its cleanup, would otherwise leave a
    router and components running in their own sessions, skewing whatever runs on the machine next."""
    running = [process for process in _started if process.poll() is None]
    for process in running:  # all at once: each takes its own time to leave
        process.terminate()
    deadline = time.monotonic() + timeout
    for process in running:
        _wait_or_kill(process, max(0.0, deadline - time.monotonic()), group=True)


class _LocalRouterUrls:
    """The URLs of a router on 127.0.0.1 at self.port."""

    @property
    def rawsocket_url(self):
        """rs://127.0.0.1:PORT"""
        return f"rs://127.0.0.1:{self.port}"

    @property
    def websocket_url(self):
        """ws://127.0.0.1:PORT/ws"""
        return f"ws://127.0.0.1:{self.port}/ws"


class RouterProcess(_LocalRouterUrls):
    """A Crossbar router running the project's config on a free port, with its own secrets file."""

    def __init__(self, workdir=None, port=None, tls=None, tuning=None):
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="nerve-router-"))
        self.port = port or free_port()
        self.tls = tls
        self.tuning = tuning  # router/tuning.py overrides, e.g. {"tcp_nodelay": False}
        self.secrets_file = self.workdir / "secrets.json"
        self.role_secrets = credentials.load_or_create(self.secrets_file)
        self.log_path = self.workdir / "router.log"
        self.process = None

    @property
    def http_url(self):
        """http://127.0.0.1:PORT/"""
        return f"http://127.0.0.1:{self.port}/"

    def start(self):
        """Start crossbar and wait until the port accepts connections."""
        command = router_command(self.port, self.secrets_file, base=self.workdir / "cbdir", tls=self.tls,
                                 tuning=self.tuning)
        log = open(self.log_path, "ab")
        self.process = _popen(command, stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.process, timeout=60)
        return self

    def stop(self):
        """Stop crossbar (SIGTERM, then SIGKILL of its whole process group)."""
        if self.process:
            end_process(self.process, timeout=15, group=True)

    def ticket(self, role, authid):
        """The ticket authid must present for role on this router."""
        return credentials.ticket_for(self.role_secrets[role], authid)

    def env(self, **extra):
        """Environment for a component process joining this router."""
        return dict(os.environ, NERVE_ROUTER=self.rawsocket_url, NERVE_SECRETS_FILE=str(self.secrets_file),
                    PYTHONUNBUFFERED="1", **extra)

    def log_text(self):
        """What the router printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class ComponentProcess:
    """One `nerve ...` command running against a router, its output kept in a file."""

    def __init__(self, router, *args, env=None, source=None):
        """Start `python -m components ARGS`; from the source tree at `source` instead of this one if given."""
        self.args = args
        self.output_path = router.workdir / f"{args[0]}-{time.monotonic_ns()}.log"
        self._output = open(self.output_path, "wb")
        self.process = _popen([sys.executable, "-m", "components", *args], env=router.env(**(env or {})),
                              stdout=self._output, stderr=subprocess.STDOUT, cwd=source)

    def output(self):
        """Everything the process printed so far."""
        return self.output_path.read_text(errors="replace")

    def running(self):
        """Whether the process is still running."""
        return self.process.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Signal the process and wait for it; returns its exit code."""
        code = end_process(self.process, sig, timeout)
        self._output.close()
        return code

    def kill(self):
        """SIGKILL: the process gets no chance to leave cleanly."""
        return self.stop(signal.SIGKILL)


class MeshUpProcess(_LocalRouterUrls):
    """`nerve up ARGS` on a free port with its own secrets file and runtime directory (children's logs under
    workdir/runtime/<port>/logs), its output in a file: a whole supervised mesh, for tests and benches.

    `status(session)` reads nerve.supervisor.status; `child(...)` finds a child process by its command line.
    `env` adds variables for `nerve up` and so for every child (e.g. NERVE_WINDOW for the orchestrators)."""

    def __init__(self, workdir=None, *args, port=None, env=None):
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="nerve-up-"))
        self.port = port or free_port()
        self.secrets_file = self.workdir / "secrets.json"
        self.role_secrets = credentials.load_or_create(self.secrets_file)
        self.runtime = self.workdir / "runtime"
        self.output_path = self.workdir / "up.log"
        variables = dict(os.environ, NERVE_SECRETS_FILE=str(self.secrets_file), NERVE_RUNTIME_DIR=str(self.runtime),
                         PYTHONUNBUFFERED="1")
        for name in ("NERVE_ROUTER", "NERVE_PORT", "NERVE_HOSTS", "NERVE_LISTEN", "NERVE_ALLOWED_ORIGINS"):
            variables.pop(name, None)
        # No exporter unless a test asks for one on a free port: meshes running at once would all want its 9464.
        variables["NERVE_EXPORTER_PORT"] = "0"
        # Stores (the alert keeper's) of this mesh only, not the project's .nerve/.
        variables["NERVE_DATA_DIR"] = str(self.workdir / "data")
        variables.update(env or {})
        with open(self.output_path, "wb") as output:
            self.process = _popen([sys.executable, "-m", "components", "up", "--port", str(self.port), *args],
                                  env=variables, stdout=output, stderr=subprocess.STDOUT)

    def ticket(self, role, authid):
        """The ticket authid must present for role on this mesh."""
        return credentials.ticket_for(self.role_secrets[role], authid)

    def join(self, role="operator", authid="up-operator"):
        """A Deferred of a session joined as role (anonymous over WebSocket, any other over RawSocket)."""
        if role == "anonymous":
            return join(self.websocket_url)
        return join(self.rawsocket_url, role, authid, self.ticket(role, authid))

    def wait_ready(self, timeout=60):
        """Block until the router accepts connections (fails early if `nerve up` exits)."""
        wait_for_port(self.port, self.process, timeout=timeout)
        return self

    @staticmethod
    def status(session):
        """A Deferred of nerve.supervisor.status: {pid, since, ts, children: [{name, state, pid, restarts, last_exit, ...}]}."""
        return session.call("nerve.supervisor.status")

    def output(self):
        """What `nerve up` printed so far (its own lines and every child's)."""
        return self.output_path.read_text(errors="replace")

    def running(self):
        """Whether `nerve up` still runs."""
        return self.process.poll() is None

    def children(self):
        """`nerve up`'s child processes (psutil), not their own children."""
        import psutil

        return psutil.Process(self.process.pid).children()

    def child(self, *args):
        """The child process whose command line ends with args (e.g. "analyzer", "--authid", "analyzer-1"), or None."""
        import psutil

        for process in self.children():
            try:
                command = process.cmdline()
            except psutil.Error:
                continue
            # A child is launch.py for its first milliseconds, with the same command at the end of its own.
            if command[-len(args):] == list(args) and not any(part.endswith("launch.py") for part in command):
                return process
        return None

    def stop(self, timeout=40):
        """SIGTERM (the ordered stop), then SIGKILL if it takes longer than timeout; returns the exit code."""
        return end_process(self.process, signal.SIGTERM, timeout)


def end_process(process, sig=signal.SIGTERM, timeout=10, group=False):
    """Send sig to a process that still runs and wait for it, SIGKILL after timeout seconds (its whole process group
    with `group`, for one whose children must go too); returns its exit code."""
    if process.poll() is None:
        process.send_signal(sig)
        _wait_or_kill(process, timeout, group)
    return process.returncode


def _wait_or_kill(process, timeout, group=False):
    """Wait up to timeout seconds for a signalled process, then SIGKILL it (or its process group)."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            if group:
                os.killpg(process.pid, signal.SIGKILL)
            else:
                process.kill()
        except ProcessLookupError:
            pass  # it ended between the wait and the kill
        process.wait()


def wait_until(predicate, timeout=5.0, interval=0.05, message="condition"):
    """A Deferred that fires with predicate()'s first truthy value, or fails after timeout seconds."""
    deadline = time.monotonic() + timeout

    @defer.inlineCallbacks
    def poll():
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {message}")
            yield task.deferLater(reactor, interval, lambda: None)

    return poll()


@defer.inlineCallbacks
def call_until(session, uri, predicate, *args, timeout=5.0, interval=0.05, message=None, **kwargs):
    """Call uri again and again until predicate(result) is truthy; return that result, or fail after timeout seconds.

    A procedure not registered yet counts as a "not yet"."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = yield session.call(uri, *args, **kwargs)
        except ApplicationError as error:
            if error.error != "wamp.error.no_such_procedure" or time.monotonic() > deadline:
                raise
            result = None  # not registered yet (its component is still joining): ask again
        else:
            if predicate(result):
                return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message or uri}; last answer: {result!r:.300}")
        yield task.deferLater(reactor, interval, lambda: None)


def join(url, role="anonymous", authid=None, ticket=None, realm="nerve", serializers=("json",), ca_file=None,
         timeout=30.0):
    """A Deferred firing with a joined session (anonymous, or a backend role with its ticket); fails if refused, or
    after timeout seconds without an answer."""
    # The same transport and credentials a component builds, without retries (a refusal should fail the test).
    config = MeshConfig(role=role, router=url, realm=realm, authid=authid, ticket=ticket, ca_file=ca_file)
    transport = dict(config.transport(), max_retries=0)
    if not config.is_rawsocket:
        transport["serializers"] = list(serializers)
    authentication = config.authentication()
    component = Component(transports=[transport], realm=realm, authentication=authentication)
    joined = defer.Deferred()

    def on_join(session, details):
        session.nerve_details = details
        if not joined.called:
            joined.callback(session)

    def on_leave(session, details):
        if not joined.called:
            joined.errback(RuntimeError(f"refused: {details.reason}: {details.message}"))

    component.on("join", on_join)
    component.on("leave", on_leave)
    done = component.start(reactor)
    done.addErrback(lambda failure: joined.called or joined.errback(failure))
    return joined.addTimeout(timeout, reactor)


class EventLog:
    """Collects events from a subscription: (topic, payload) pairs, newest last."""

    def __init__(self):
        self.events = []
        self.arrivals = []

    def __call__(self, *args, details=None, **kwargs):
        self.events.append((getattr(details, "topic", None), args[0] if args else kwargs))
        self.arrivals.append(time.monotonic())

    def payloads(self, topic=None):
        """Payloads of the events seen, optionally only on one topic."""
        return [payload for seen, payload in self.events if topic is None or seen == topic]


def measurement(host_id, seq, metrics, ts=None, run="test-run", interval=1.0):
    """A well-formed measurement event for tests that play a tracker."""
    return {"host_id": host_id, "hostname": host_id, "run": run, "seq": seq, "ts": ts or time.time(),
            "interval": interval, "metrics": metrics}


def publish_acknowledged(session, topic, payload):
    """Publish with acknowledge=True so a refusal surfaces as an error."""
    return session.publish(topic, payload, options=PublishOptions(acknowledge=True))


def sleep(seconds):
    """A Deferred that fires after seconds, letting the reactor run meanwhile."""
    return task.deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def callee_count(session, uri):
    """How many callees serve uri now (0 when nothing is registered)."""
    registration = yield session.call("wamp.registration.lookup", uri, {"match": "exact"})
    if registration is None:
        return 0
    count = yield session.call("wamp.registration.count_callees", registration)
    return count


@defer.inlineCallbacks
def wait_for_callees(session, uri, expected, timeout=20.0):
    """Wait until exactly `expected` callees serve uri."""
    deadline = time.monotonic() + timeout
    while True:
        count = yield callee_count(session, uri)
        if count == expected:
            return count
        if time.monotonic() > deadline:
            raise AssertionError(f"{count} callees registered for {uri}, expected {expected}")
        yield sleep(0.1)
