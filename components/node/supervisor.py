"""`nerve up`: the router and a working mesh as child processes that are restarted when they exit.

- A child that exits is restarted after a backoff (RestartPolicy: 1 s doubling to 30 s, back to 1 s after a minute
  of healthy running; the router restarts at once after any run of 10 s or more); each exit is one line naming the
  exit code or the signal.
- A child that exits 5 times in 2 minutes is left stopped, with a line saying where its log is; the rest keeps
  running. The router is the exception: when it cannot be kept running, the mesh stops (exit code 1).
- SIGINT, SIGTERM or SIGHUP stop every child in order, each group given a bounded time before SIGKILL: the producers
  (tracker, simulator), then compute and the solver, the analyzers, the orchestrator, the router last. A second
  signal kills what still runs.
- Every child's output goes to the terminal as before and to <runtime dir>/<port>/logs/<name>.log (the previous
  run's file is kept as <name>.log.1).
- A spare router waits beside the running one, loaded but not started (components/node/warmrouter.py, from 10 s
  after each start): a router that exits is replaced by it, so the mesh gets its router back in about half the time
  of a cold start. A spare that dies is not replaced until the router's next start.
- Children die with `nerve up` even when it is killed outright (components/node/launch.py), and whatever a child
  leaves in its session (a router's worker) is killed when it exits, so no orphan keeps the port.
- `nerve up` joins the mesh itself as role `supervisor` (SupervisorStatus, built with nerve's decorators):
  `nerve.supervisor.status` (procedure) and `nerve.supervisor.children` (retained event, on every change) say how
  every child is doing; the dashboard's mesh panel shows it, and a bench can read it.

Why not Twisted's `twisted.runner.procmon.ProcessMonitor`: its backoff fits (minRestartDelay, maxRestartDelay and
threshold are this backoff, except that it restarts a child that ran longer than threshold at once rather than
after 1 s), but its public API never says that or why a child exited: the exit goes from its LoggingProtocol to a
private method (`_monitoredProcessExited`) and the reason is dropped. Everything nerve up adds needs that moment:
the exit line with its reason, the give-up count, the status, and the ordered stop (it must wait for one group's
exit before stopping the next; `stopService` signals everyone at once). It also takes no protocol of ours (its
output goes to the log as events, not to files and the terminal) and no pre-exec step. So `Supervisor` uses
`reactor.spawnProcess` directly, and only the backoff arithmetic mirrors ProcessMonitor's.
"""

import os
import re
import signal
import sys
import time
import traceback
from collections import deque
from pathlib import Path

from twisted.internet import defer, error, protocol, task

from components.mesh.credentials import PROJECT_ROOT
from components.mesh.decorators import on_join, procedure
from components.mesh.errors import NerveError, NotAuthenticated
from components.node.routerctl import (DEFAULT_LISTEN, connect_host, is_wildcard, port_open, router_command,
                                        runtime_dir, url_host)
from components.node.warmrouter import START_LINE, spare_command

LAUNCH = Path(__file__).with_name("launch.py")
STATUS_URI = "nerve.supervisor.status"
CHILDREN_TOPIC = "nerve.supervisor.children"
SUPERVISOR_ROLE = "supervisor"
SUPERVISOR_AUTHID = "supervisor"
# The order of the stop: what feeds the mesh first, so nothing it sends is lost on the way; the router last.
# A router that ran this long before it exited was killed, not crashing on start: it restarts at once again.
ROUTER_HEALTHY_AFTER = 10.0
STOP_ORDER = ("producer", "compute", "analyzer", "orchestrator", "router")
STOP_GRACE_SECONDS = 5  # per group, from SIGTERM to SIGKILL
ROUTER_STOP_GRACE_SECONDS = 10
ROUTER_START_TIMEOUT = 60
BARE_CROSSBAR_LINE = re.compile(r"^\S+ \[\w+\s+\d+\]\s*$")
# A line longer than this without a newline is passed on in pieces (a child must not grow our memory).
MAX_LINE = 65536
# A spare is started this long after its child's start, so it does not slow the start it would replace.
SPARE_AFTER = 10.0


def _write(stream, text):
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):
        pass  # the terminal went away: the log files still get everything


def _signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _duration(seconds):
    return f"{seconds / 60:g} minutes" if seconds >= 60 and seconds % 60 == 0 else f"{seconds:g} s"


def _kill_group(pid):
    """SIGKILL the process group (= session) a child started; nothing happens when it is empty."""
    if pid:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _kill(child):
    """SIGKILL a running child and everything in its session (also before launch.py made the session)."""
    _kill_process(child.transport, child.pid)


def _kill_process(transport, pid):
    if transport is not None:
        try:
            transport.signalProcess("KILL")
        except error.ProcessExitedAlready:
            pass
    _kill_group(pid)


class RestartPolicy:
    """When to restart a child that exited: after 1 s, doubling up to 30 s, back to 1 s once a run lasted a minute;
    never again once it exited 5 times within 2 minutes. With at_once, the first exit of a healthy run restarts
    without waiting (the router: every component waits for it, and a crash loop still backs off from the second exit).

    Plain calls on a clock (a function returning seconds), so it is tested without processes or waiting."""

    def __init__(self, clock=time.monotonic, first_delay=1.0, max_delay=30.0, healthy_after=60.0, max_exits=5,
                 window=120.0, at_once=False):
        self.clock = clock
        self.at_once = at_once
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.healthy_after = healthy_after
        self.max_exits = max_exits
        self.window = window
        self.next_delay = 0.0 if at_once else first_delay
        self.exits = deque()
        self.started_at = None

    def started(self):
        """The child (re)started now."""
        self.started_at = self.clock()

    def exited(self):
        """The child exited now: the seconds to wait before restarting it, or None to leave it stopped."""
        now = self.clock()
        if self.started_at is not None and now - self.started_at >= self.healthy_after:
            self.next_delay = 0.0 if self.at_once else self.first_delay
        self.exits.append(now)
        while now - self.exits[0] > self.window:
            self.exits.popleft()
        if len(self.exits) >= self.max_exits:
            return None
        delay = self.next_delay
        self.next_delay = min(delay * 2, self.max_delay) if delay else self.first_delay
        return delay

    def describe(self):
        """The give-up rule in words."""
        return f"{self.max_exits} times in {_duration(self.window)}"


class Child:
    """One supervised process: its command, restart policy and log file, and what happened to it so far."""

    def __init__(self, name, command, env, group, policy, log_path=None, relay_prefix=None, prepare=None,
                 essential=False, restartable=True, spare_command=None):
        self.name = name
        self.command = list(command)
        self.env = dict(env)
        self.group = group
        self.policy = policy
        self.log_path = log_path
        self.relay_prefix = relay_prefix  # relay as "<prefix>: line" on stderr (the router); else as the child wrote it
        self.prepare = prepare  # called before every start
        self.essential = essential  # the mesh cannot run without it
        self.restartable = restartable
        self.spare_command = spare_command  # a process that loads ahead and becomes the next run on `start`
        self.spare = None  # the spare's ChildProtocol while it waits
        self.spare_call = None
        self.state = "starting"  # running, restarting, stopping, stopped, failed
        self.pid = None
        self.transport = None
        self.protocol = None
        self.restarts = 0
        self.started_at = None  # epoch seconds of the latest start
        self.last_exit = None
        self.restart_call = None
        self.restart_at = None
        self.log_file = None
        self._waiters = []

    @property
    def running(self):
        """Whether the process runs now."""
        return self.transport is not None

    def wait_exit(self):
        """A Deferred that fires once the process is not running (at once if it is not)."""
        if not self.running:
            return defer.succeed(self)
        waiter = defer.Deferred()
        self._waiters.append(waiter)
        return waiter

    def _exit_seen(self):
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(self)

    def write_log(self, data):
        if self.log_file is not None:
            try:
                self.log_file.write(data)
                self.log_file.flush()
            except (OSError, ValueError):
                pass

    def note(self, text):
        """A line of nerve up's own in the child's log."""
        self.write_log(f"--- nerve up {time.strftime('%Y-%m-%d %H:%M:%S')}: {text}\n".encode())

    def record(self):
        """What anyone may know of the child: state, pid, restarts, the last exit and its log file's name."""
        return {"name": self.name, "group": self.group, "state": self.state, "pid": self.pid,
                "restarts": self.restarts, "started_at": self.started_at, "last_exit": self.last_exit,
                "restart_at": self.restart_at if self.state == "restarting" else None,
                "log": _shown_path(self.log_path)}


def _shown_path(path):
    # The log's path as the mesh sees it: relative to the project when it is inside (no home directory goes out).
    if path is None:
        return None
    try:
        return str(Path(path).resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return Path(path).name


class ChildProtocol(protocol.ProcessProtocol):
    """One run of a child: its output line by line to the log and the terminal, its exit to the supervisor."""

    def __init__(self, supervisor, child, spare=False):
        self.supervisor = supervisor
        self.child = child
        self.spare = spare  # waits on its stdin for the word to start (warmrouter.py) until become_run
        self.pid = None
        self.partial = {1: b"", 2: b""}

    def connectionMade(self):
        self.pid = self.transport.pid
        if not self.spare:
            self.transport.closeStdin()
            self._bind()

    def become_run(self):
        """A spare becomes the child's run: told to start, and its exit is the child's from now on."""
        self.spare = False
        self.transport.write(START_LINE)
        self.transport.closeStdin()
        self._bind()

    def _bind(self):
        self.child.transport = self.transport
        self.child.pid = self.pid

    def childDataReceived(self, fd, data):
        lines = (self.partial.get(fd, b"") + data).split(b"\n")
        rest = lines.pop()
        if len(rest) > MAX_LINE:
            lines.append(rest)
            rest = b""
        self.partial[fd] = rest
        for line in lines:
            self.supervisor._output(self.child, fd, line)

    def processExited(self, reason):
        self.supervisor._exited(self.child, self, reason)

    def processEnded(self, reason):
        for fd, rest in self.partial.items():
            if rest:
                self.supervisor._output(self.child, fd, rest)
        self.partial = {1: b"", 2: b""}


class Supervisor:
    """Runs child processes, restarts those that exit (each under its own RestartPolicy), stops groups of them in
    order. Everything happens in the reactor; `on_change` callbacks hear of every change of state, `on_failed`
    callbacks of a child left stopped."""

    def __init__(self, reactor, log_dir=None, say=None, stdout=None, stderr=None, policy=RestartPolicy):
        self.reactor = reactor
        self.log_dir = Path(log_dir) if log_dir else None
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.say = say or (lambda text: _write(self.stderr, f"nerve up: {text}\n"))
        self.policy = policy
        self.children = []
        self.stopping = False
        self.on_change = []
        self.on_failed = []
        self.since = time.time()

    def add(self, name, command, env, group, policy=None, **options):
        """Start a child now and keep it running; returns its Child."""
        child = Child(name, command, env, group, policy or self.policy(), log_path=self._log_path(name), **options)
        if child.log_path is not None:
            child.log_path.parent.mkdir(parents=True, exist_ok=True)
            if child.log_path.exists():
                child.log_path.replace(child.log_path.with_name(child.log_path.name + ".1"))  # the previous run's
            child.log_file = open(child.log_path, "ab")
        self.children.append(child)
        self._spawn(child)
        return child

    def child(self, name):
        """The child called name."""
        return next(child for child in self.children if child.name == name)

    def _log_path(self, name):
        return self.log_dir / f"{name}.log" if self.log_dir is not None else None

    def _spawn(self, child):
        child.restart_call = None
        child.restart_at = None
        if child.prepare is not None:
            child.prepare()
        child.policy.started()
        child.started_at = time.time()
        child.state = "running"
        if child.spare is not None:
            child.protocol, child.spare = child.spare, None
            child.protocol.become_run()
            child.note(f"started pid {child.pid} (the spare, loaded ahead): {' '.join(child.command)}")
        else:
            child.protocol = ChildProtocol(self, child)
            try:
                self._start_process(child.protocol, child.command, child.env)
            except OSError as problem:  # no process at all: counts as an exit, under the same policy
                child.protocol = None
                self._after_exit(child, f"could not start: {problem}", None, None, 0.0)
                return
            child.note(f"started pid {child.pid}: {' '.join(child.command)}")
        if child.spare_command is not None:
            self._cancel_spare_call(child)
            child.spare_call = self.reactor.callLater(SPARE_AFTER, self._spawn_spare, child)
        self._changed()

    def _start_process(self, process_protocol, command, env):
        args = [sys.executable, "-S", str(LAUNCH), str(os.getpid()), *command]
        self.reactor.spawnProcess(process_protocol, sys.executable, args, env=env, childFDs={0: "w", 1: "r", 2: "r"})

    def _spawn_spare(self, child):
        child.spare_call = None
        if self.stopping or child.state != "running" or child.spare is not None:
            return
        spare = ChildProtocol(self, child, spare=True)
        try:
            self._start_process(spare, child.spare_command, child.env)
        except OSError as problem:
            child.note(f"could not start a spare: {problem}")
            return
        child.spare = spare
        child.note(f"spare pid {spare.pid} loads and waits to replace pid {child.pid}")

    def _cancel_spare_call(self, child):
        if child.spare_call is not None and child.spare_call.active():
            child.spare_call.cancel()
        child.spare_call = None

    def _drop_spare(self, child, kill=False):
        # A spare reads the end of its stdin as "not needed" and exits 0.
        self._cancel_spare_call(child)
        spare, child.spare = child.spare, None
        if spare is not None:
            if kill:
                _kill_process(spare.transport, spare.pid)
            else:
                spare.transport.closeStdin()

    def _output(self, child, fd, line):
        child.write_log(line + b"\n")
        text = line.decode(errors="replace").rstrip("\r")
        if child.relay_prefix:
            if text.strip() and not BARE_CROSSBAR_LINE.match(text):
                _write(self.stderr, f"{child.relay_prefix}: {text}\n")
        else:
            _write(self.stdout if fd == 1 else self.stderr, text + "\n")

    def _exited(self, child, run, reason):
        code = getattr(reason.value, "exitCode", None)
        number = getattr(reason.value, "signal", None)
        because = _signal_name(number) if number else f"exit code {code}"
        if run.spare:
            if run is child.spare:
                child.spare = None
            _kill_group(run.pid)
            child.note(f"spare pid {run.pid} exited ({because}) before it was needed")
            return
        if run is not child.protocol:
            return  # an earlier run's late news
        pid, ran = child.pid, time.time() - child.started_at
        child.transport = child.pid = child.protocol = None
        _kill_group(pid)  # whatever it left behind in its session (a router's workers) goes with it
        self._after_exit(child, because, code, _signal_name(number) if number else None, ran)

    def _after_exit(self, child, because, code, signal_name, ran):
        child.last_exit = {"reason": because, "code": code, "signal": signal_name, "at": time.time(),
                           "ran_seconds": round(ran, 1)}
        child.note(f"exited ({because}) after {ran:.1f} s")
        try:
            self._decide(child, because, ran)
        finally:
            child._exit_seen()  # after the state is set: a waiter (the ordered stop) reads it

    def _decide(self, child, because, ran):
        if self.stopping or child.state == "stopping" or not child.restartable:
            child.state = "stopped"
            self._drop_spare(child)
            self._changed()
            return
        delay = child.policy.exited()
        if delay is None:
            child.state = "failed"
            self._drop_spare(child)
            where = f"; its log: {child.log_path}" if child.log_path else ""
            rest = "" if child.essential else ", the rest keeps running"
            self.say(f"{child.name} exited {child.policy.describe()} (last: {because}); left stopped{rest}{where}")
            self._changed()
            for callback in list(self.on_failed):
                callback(child)
            return
        child.state = "restarting"
        child.restart_at = time.time() + delay
        child.restart_call = self.reactor.callLater(delay, self._restart, child)
        self.say(f"{child.name} exited ({because}) after {ran:.1f} s; restarting it in {delay:g} s")
        self._changed()

    def _restart(self, child):
        child.restart_call = None
        if self.stopping or child.state != "restarting":
            return
        child.restarts += 1
        self._spawn(child)

    def _changed(self):
        for callback in list(self.on_change):
            try:
                callback()
            except Exception as problem:  # a status listener must not break supervision
                self.say(f"status update failed: {problem!r}")

    def status(self):
        """Every child's record, in start order, and who supervises them since when."""
        return {"pid": os.getpid(), "since": self.since, "ts": time.time(),
                "children": [child.record() for child in self.children]}

    @defer.inlineCallbacks
    def stop_group(self, group, grace=STOP_GRACE_SECONDS):
        """Stop every child of group: no more restarts, SIGTERM, SIGKILL to the stragglers after grace seconds.
        Fires with the children that were running, once they have exited."""
        children = [child for child in self.children if child.group == group]
        for child in children:
            self._drop_spare(child)
            if child.restart_call is not None and child.restart_call.active():
                child.restart_call.cancel()
            child.restart_call = None
            if not child.running and child.state in ("restarting", "starting"):
                child.state = "stopped"
        running = [child for child in children if child.running]
        for child in running:
            child.state = "stopping"
            try:
                child.transport.signalProcess("TERM")
            except error.ProcessExitedAlready:
                pass
        if running:
            self._changed()
        exited = yield self._within([child.wait_exit() for child in running], grace)
        if not exited:
            stubborn = [child for child in running if child.running]
            self.say(f"{', '.join(child.name for child in stubborn)} did not stop in {grace:g} s; killing")
            for child in stubborn:
                _kill(child)
            yield self._within([child.wait_exit() for child in stubborn], 5)
        if running:
            self.say(f"stopped {', '.join(child.name for child in running)}")
        return running

    @defer.inlineCallbacks
    def stop_all(self, order=STOP_ORDER, grace=STOP_GRACE_SECONDS):
        """Stop every child, group by group in `order` (groups it does not name first)."""
        self.stopping = True
        groups = list(dict.fromkeys(child.group for child in self.children))
        for group in [group for group in groups if group not in order] + list(order):
            yield self.stop_group(group, grace)

    def kill_all(self):
        """SIGKILL every child that still runs (a second Ctrl-C)."""
        self.stopping = True
        for child in self.children:
            self._drop_spare(child, kill=True)
            _kill(child)

    def _within(self, deferreds, seconds):
        """Fires True once every deferred fired, or False after seconds, whichever comes first."""
        result = defer.Deferred()
        if not deferreds:
            return defer.succeed(True)
        pending = [len(deferreds)]
        timer = self.reactor.callLater(seconds, lambda: result.called or result.callback(False))

        def one_done(value):
            pending[0] -= 1
            if pending[0] == 0 and not result.called:
                timer.cancel()
                result.callback(True)
            return value

        for deferred in deferreds:
            deferred.addBoth(one_done)
        return result

    def close(self):
        """Close the log files (once every child has stopped)."""
        for child in self.children:
            if child.log_file is not None:
                child.log_file.close()
                child.log_file = None


class SupervisorStatus:
    """`nerve up` on the mesh (role `supervisor`): how every child is doing, for the dashboard and for benches.

    nerve.supervisor.status answers with Supervisor.status(); nerve.supervisor.children carries the same, retained,
    on every join and every change."""

    def __init__(self, supervisor, mesh):
        self.supervisor = supervisor
        self.mesh = mesh
        supervisor.on_change.append(self.publish)

    @procedure(STATUS_URI)
    def status(self):
        """{pid, since, ts, children: [{name, group, state, pid, restarts, started_at, last_exit, restart_at, log}]}"""
        return self.supervisor.status()

    @on_join
    def publish(self):
        """Publish the children's records, retained, so a dashboard that opens later gets them at once."""
        self.mesh.publish(CHILDREN_TOPIC, self.supervisor.status(), retain=True)


def component_command(*args):
    """The command line of a nerve component run with this interpreter."""
    return [sys.executable, "-m", "components", *args]


class MeshUp:
    """`nerve up` in a reactor: the router, the components once it listens, the status component, and on a signal
    the ordered stop. exit_code says how it ended (0 after a signal, 1 when the router could not run)."""

    def __init__(self, reactor, port, analyzers, hosts, compute=1, secrets_file=None, tls=None, listen=DEFAULT_LISTEN,
                 allowed_origins=(), runtime_base=None, orchestrators=1, data_dir=None, exporter_port=0, notify=None):
        self.reactor = reactor
        self.notify = notify  # the notifier's config file: a notifier runs only when given one
        self.port = port
        self.exporter_port = exporter_port  # 0: no exporter
        self.analyzers = analyzers
        self.orchestrators = orchestrators  # more than one: hot standbys (orchestrator-2, ...), for benches
        self.hosts = hosts
        self.compute = compute
        self.secrets_file = secrets_file
        self.tls = tls
        self.listen = listen
        self.allowed_origins = allowed_origins
        self.runtime_base = runtime_base
        self.local = connect_host(listen)
        self.cbdir = runtime_dir(port, runtime_base)
        self.supervisor = Supervisor(reactor, log_dir=self.cbdir / "logs")
        self.supervisor.on_failed.append(self._child_failed)
        self.say = self.supervisor.say
        self.exit_code = 0
        self.signalled = None
        self.stop_requested = False
        self.stopping = False
        self.router = None
        self.component = self.component_done = None
        self.started = time.monotonic()
        scheme = "rss" if tls else "rs"
        self.env = dict(os.environ, NERVE_ROUTER=f"{scheme}://{url_host(self.local)}:{port}", PYTHONUNBUFFERED="1")
        if tls and tls.ca_certificate:
            self.env["NERVE_CA_FILE"] = str(tls.ca_certificate)
        if secrets_file:
            self.env["NERVE_SECRETS_FILE"] = os.path.abspath(secrets_file)
        if data_dir:  # children keep their stores (alerts, outbox, history) under one directory
            self.env["NERVE_DATA_DIR"] = os.path.abspath(data_dir)

    def start(self):
        """Start the router, then (start_components) the rest once it listens."""
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        try:
            import txaio

            txaio.use_twisted()
            from components.mesh.logs import configure_logging

            configure_logging("warn", "nerve up")
            command = router_command(self.port, self.secrets_file, base=self.runtime_base, tls=self.tls,
                                     listen=self.listen, allowed_origins=self.allowed_origins)
            self.router = self.supervisor.add("router", command, self.env, "router", relay_prefix="router",
                                              policy=RestartPolicy(at_once=True, healthy_after=ROUTER_HEALTHY_AFTER),
                                              prepare=self._remove_stale_pid, spare_command=spare_command(command),
                                              essential=True, restartable=False)
        except NerveError as problem:
            return self._fail(str(problem))
        except Exception:  # a bug must not leave `nerve up` running with nothing started
            return self._fail(f"failed to start:\n{traceback.format_exc()}")
        return self._wait_for_router().addErrback(lambda failure: self._fail(f"failed: {failure.getTraceback()}"))

    def _remove_stale_pid(self):
        # Crossbar refuses to start over the pid file of a node that was killed.
        (self.cbdir / "node.pid").unlink(missing_ok=True)

    @defer.inlineCallbacks
    def _wait_for_router(self):
        deadline = time.monotonic() + ROUTER_START_TIMEOUT
        while True:
            if self.stopping:
                return
            if not self.router.running:
                reason = (self.router.last_exit or {}).get("reason", "no exit code")
                self._fail(f"router exited ({reason}) before opening port {self.port}; its log: {self.router.log_path}")
                return
            # No reactor turn between this check and the one above, so no exit of the router can come in between:
            # one that comes later finds it restartable.
            if port_open(self.port, self.local):
                break
            if time.monotonic() > deadline:
                self._fail(f"router did not open port {self.port} within {ROUTER_START_TIMEOUT} s; "
                           f"its log: {self.router.log_path}")
                return
            yield task.deferLater(self.reactor, 0.1, lambda: None)
        self.router.restartable = True  # from now on a router that exits is restarted like any child
        self._start_components()

    def _start_components(self):
        add, env = self.supervisor.add, self.env
        add("orchestrator", component_command("orchestrator"), env, "orchestrator")
        for index in range(2, self.orchestrators + 1):
            name = f"orchestrator-{index}"
            add(name, component_command("orchestrator", "--authid", name), env, "orchestrator")
        for index in range(self.analyzers):
            name = f"analyzer-{index + 1}"
            add(name, component_command("analyzer", "--authid", name), env, "analyzer")
        add("alerts", component_command("alerts"), env, "orchestrator")
        add("recorder", component_command("recorder"), env, "orchestrator")  # its store: NERVE_DATA_DIR in env
        if self.notify:
            add("notifier", component_command("notifier", "--config", os.path.abspath(self.notify)), env, "orchestrator")
        if self.exporter_port:
            add("exporter", component_command("exporter", "--port", str(self.exporter_port)), env, "orchestrator")
        add("solver", component_command("solver", "--authid", "solver"), env, "compute")
        for index in range(self.compute):
            name = f"compute-{index + 1}"
            add(name, component_command("compute", "--authid", name), env, "compute")
        add("tracker", component_command("tracker"), env, "producer")
        if self.hosts:
            add("simulator", component_command("tracker", "--hosts", str(self.hosts)), env, "producer")
        self._print_banner()
        self._join_mesh()

    def _print_banner(self):
        tls, listen, local, port = self.tls, self.listen, self.local, self.port
        secure = "s" if tls else ""
        host = url_host(local)
        reach = (f"  listening on every interface ({listen}): other machines use this machine's address\n"
                 if is_wildcard(listen) else "" if local.startswith("127.") or local == "::1"
                 else f"  listening on {listen} only\n")
        _write(sys.stdout,
               f"nerve is up in {time.monotonic() - self.started:.1f} s (router ready; components joining)\n"
               f"  dashboard: http{secure}://{host}:{port}/\n"
               f"  WebSocket: ws{secure}://{host}:{port}/ws   RawSocket: r{'ss' if tls else 's'}://{host}:{port}\n"
               + reach
               + (f"  development CA (trust it to verify): {tls.ca_certificate}\n" if tls and tls.ca_certificate else "")
               + f"  logs: {self.supervisor.log_dir}/<name>.log\n"
               + "  A component that exits is restarted. Ctrl-C stops everything.\n")

    def _join_mesh(self):
        from components.mesh.config import MeshConfig
        from components.mesh.runner import ComponentConfig, start_component
        from components.mesh.session import Mesh

        try:
            mesh_config = MeshConfig(role=SUPERVISOR_ROLE, router=self.env["NERVE_ROUTER"], authid=SUPERVISOR_AUTHID,
                                     secrets_file=self.secrets_file, ca_file=self.env.get("NERVE_CA_FILE"),
                                     log_level="warn")
        except NerveError as problem:
            self.say(f"cannot join the mesh ({problem}): nerve.supervisor.status is unavailable")
            return
        mesh = Mesh(ComponentConfig(mesh=mesh_config))
        status = SupervisorStatus(self.supervisor, mesh)
        self.component, self.component_done = start_component(
            self.reactor, [status], mesh, "nerve up", is_fatal=self._refused, leave_on_shutdown=False,
            waiting_notice=False)
        self.component_done.addErrback(lambda failure: None)

    def _refused(self, problem):
        if getattr(problem, "error", None) == NotAuthenticated.uri:
            self.say(f"the router refused the supervisor's credential ({problem.error_message()}): "
                     f"nerve.supervisor.status is unavailable; the mesh runs on")
            return True
        return False

    def _child_failed(self, child):
        if child.essential:
            self.say(f"the {child.name} could not be kept running: stopping the mesh")
            self.exit_code = 1
            self._stop_reactor()

    def _fail(self, message):
        self.say(message)
        self.exit_code = 1
        self._stop_reactor()

    def _stop_reactor(self):
        if not self.stop_requested and self.reactor.running:
            self.stop_requested = True
            self.reactor.stop()

    def _on_signal(self, signum, frame):
        self.reactor.callFromThread(self._signalled, signum)

    def _signalled(self, signum):
        name = _signal_name(signum)
        if self.signalled is None:
            self.signalled = name
            self.say(f"{name}: stopping the mesh (producers first, the router last)")
            self._stop_reactor()
        else:
            self.say(f"{name} again: killing what still runs")
            self.supervisor.kill_all()

    @defer.inlineCallbacks
    def shutdown(self):
        """Stop every child in STOP_ORDER; the supervisor's own session leaves just before the router stops."""
        self.stopping = True
        self.supervisor.stopping = True
        began = time.monotonic()
        for group in STOP_ORDER:
            if group == "router" and self.component is not None:
                from components.mesh.runner import leave

                yield leave(self.component, self.component_done)
            yield self.supervisor.stop_group(group, ROUTER_STOP_GRACE_SECONDS if group == "router" else STOP_GRACE_SECONDS)
        self.supervisor.close()
        self.say(f"everything stopped in {time.monotonic() - began:.1f} s")


def run_mesh(port, analyzers, hosts, **options):
    """Run router, orchestrator, tracker, analyzers, TSP solver and compute (and a simulator with --hosts), restarting
    what exits, until SIGINT/SIGTERM/SIGHUP; returns the exit code. `options` are MeshUp's.

    The router listens on `listen` (this machine only by default); its WebSocket takes browsers from its own
    origins and `allowed_origins`. Its runtime directory and the children's logs are under runtime_base/<port>.
    With orchestrators > 1 the others (orchestrator-2, ...) are hot standbys (bench/chaos_bench.py)."""
    local = connect_host(options.get("listen", DEFAULT_LISTEN))
    if port_open(port, local):
        sys.stderr.write(f"nerve up: port {port} is already in use; stop what runs there or pass --port\n")
        return 1
    if options.get("exporter_port") and port_open(options["exporter_port"], "127.0.0.1"):
        sys.stderr.write(f"nerve up: port {options['exporter_port']} is in use, so the Prometheus exporter is not started "
                         f"(--exporter-port moves it, 0 says none)\n")
        options["exporter_port"] = 0
    from twisted.internet import reactor

    up = MeshUp(reactor, port, analyzers, hosts, **options)
    reactor.callWhenRunning(up.start)
    reactor.addSystemEventTrigger("before", "shutdown", up.shutdown)
    reactor.run()
    return up.exit_code
