"""Runs a component: joins the realm, binds the decorated functions on every join, reconnects, stops cleanly."""

import importlib
import importlib.util
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import txaio

txaio.use_twisted()

from autobahn.twisted.component import Component  # noqa: E402
from autobahn.wamp.exception import ApplicationError  # noqa: E402
from twisted.internet import defer, task  # noqa: E402
from twisted.logger import Logger  # noqa: E402

from components.mesh.binder import Binder  # noqa: E402
from components.mesh.config import MeshConfig  # noqa: E402
from components.mesh.errors import NotAuthenticated  # noqa: E402
from components.mesh.logs import configure_logging  # noqa: E402
from components.mesh.session import Mesh  # noqa: E402
from components.mesh.tuning import tune_transport  # noqa: E402

log = Logger(namespace="nerve")
EXIT_AUTH_FAILED = 3
# A one-shot command (`nerve alert send`, `nerve tsp solve`) retries this many times, about 5 s, before giving up.
ONE_SHOT_RETRIES = 6
START_HINT = "start one with `nerve up` or `nerve router`, or point NERVE_ROUTER / --router at yours"


@dataclass(frozen=True)
class ComponentConfig:
    """The config of a user component run by `nerve run`: only the connection."""

    mesh: MeshConfig


def load_module(target):
    """Import a module by dotted name, or from a .py file path."""
    path = Path(target)
    if path.suffix == ".py":
        if not path.is_file():
            raise OSError(f"no such file: {path}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(target)


class _WaitingNotice:
    """Says once, on the first failed connect, which router a component waits for and how to start one."""

    def __init__(self, router, name):
        self.router = router
        self.name = name
        self.said = False

    def __call__(self, component, error):
        if not self.said:
            self.said = True
            reason = getattr(error, "value", error)
            sys.stderr.write(f"{self.name}: waiting for the router at {self.router} ({type(reason).__name__}); "
                             f"{START_HINT}\n")

    def joined(self):
        """The next failure after a join is news again."""
        self.said = False


def _component(mesh_config, name, max_retries=-1, is_fatal=None, waiting_notice=True):
    """An Autobahn Component for the mesh config, and the notice it gives while it cannot connect."""
    transport = dict(mesh_config.transport(), max_retries=max_retries)
    component = Component(transports=[transport], realm=mesh_config.realm,
                          authentication=mesh_config.authentication(), is_fatal=is_fatal)
    if waiting_notice:
        notice = _WaitingNotice(mesh_config.router, name)
        component.on("connectfailure", notice)
        component.on("join", lambda session, details: notice.joined())
    return component


def start_component(reactor, targets, mesh, name, is_fatal=None, leave_on_shutdown=True, waiting_notice=True):
    """Join and bind targets' decorated functions on every join, in a reactor that already runs and whose process
    the caller owns (signals, logging, exit code): `nerve up` runs its status component this way.

    Returns the autobahn Component and the Deferred that fires when it ends for good; `leave(component, done)`
    leaves. With leave_on_shutdown the session also leaves before the reactor shuts down."""
    mesh_config = mesh.config.mesh
    binder = Binder(targets, mesh, on_transport=lambda transport: tune_transport(transport, mesh_config.tuning),
                    fail_outstanding=mesh_config.tuning["fail_calls_on_leave"])
    component = _component(mesh_config, name, is_fatal=is_fatal, waiting_notice=waiting_notice)
    component.on("join", binder.on_join)
    component.on("leave", binder.on_leave)
    done = component.start(reactor)
    if leave_on_shutdown:
        reactor.addSystemEventTrigger("before", "shutdown", lambda: leave(component, done))
    # "during" follows every "before" trigger's Deferred, so the hooks run once the session has left.
    reactor.addSystemEventTrigger("during", "shutdown", binder.run_stop_hooks)
    binder.start_offline_timers()
    return component, done


def run(targets, config, mesh=None, name="nerve"):
    """Run targets (modules or objects with decorated functions) until SIGINT/SIGTERM; returns the exit code."""
    mesh_config = config.mesh
    configure_logging(mesh_config.log_level, name)
    mesh = mesh or Mesh(config)
    exit_code = [0]

    def is_fatal(error):
        # A refused credential does not get better by retrying: say why and exit.
        if isinstance(error, ApplicationError) and error.error == NotAuthenticated.uri:
            log.critical("router refused the credential: {message}", message=error.error_message())
            exit_code[0] = EXIT_AUTH_FAILED
            return True
        return False

    def main(reactor):
        component, done = start_component(reactor, targets, mesh, name, is_fatal=is_fatal)
        reactor.callWhenRunning(_stop_once_on_signals, reactor)
        done.addErrback(lambda failure: exit_code.__setitem__(0, exit_code[0] or 1))
        return done

    try:
        task.react(main)
    except SystemExit as stop:
        return exit_code[0] or (stop.code if isinstance(stop.code, int) else 0)
    return exit_code[0]


def _stop_once_on_signals(reactor):
    """SIGINT and SIGTERM stop the reactor once; a second signal during shutdown is ignored."""
    stopping = []

    def on_signal(signum, frame):
        if reactor.running and not stopping:
            stopping.append(signum)
            log.info("stopping on {name}", name=signal.Signals(signum).name)
            reactor.callFromThread(reactor.stop)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)


def leave(component, done, timeout=2):
    """Leave the session cleanly, waiting at most `timeout` seconds; a Deferred, or None when there is nothing to wait
    for."""
    if done.called:
        return None  # the component already ended (e.g. a refused credential)
    stopping = component.stop()
    if isinstance(stopping, defer.Deferred):
        from twisted.internet import reactor

        return stopping.addTimeout(timeout, reactor).addErrback(lambda failure: None)
    return None


def run_once(action, config, name="nerve"):
    """Join (retrying for about 5 s), run action(mesh) -> Deferred, leave; returns 0, or 1 with the error printed."""
    mesh_config = config.mesh
    configure_logging(mesh_config.log_level, name)
    mesh = Mesh(config)
    outcome = {"code": 1}
    component = _component(mesh_config, name, max_retries=ONE_SHOT_RETRIES)

    @defer.inlineCallbacks
    def on_join(session, details):
        mesh.session = session
        try:
            yield action(mesh)
            outcome["code"] = 0
        except ApplicationError as error:
            sys.stderr.write(f"{name}: refused: {error.error}: {error.error_message()}\n")
        yield session.leave()

    def on_leave(session, details):
        if details.reason not in ("wamp.close.normal", "wamp.error.goodbye_and_out"):
            sys.stderr.write(f"{name}: {details.reason}: {details.message}\n")

    component.on("join", on_join)
    component.on("leave", on_leave)

    def main(reactor):
        done = component.start(reactor)
        done.addErrback(lambda failure: sys.stderr.write(f"{name}: gave up: cannot reach the router at "
                                                         f"{mesh_config.router}\n"))
        return done

    try:
        task.react(main)
    except SystemExit:
        pass
    return outcome["code"]
