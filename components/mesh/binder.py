"""Binding decorated functions to a joined session: subscribe, register, start timers; unbind on leave."""

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import RegisterOptions, SubscribeOptions
from twisted.internet import defer, task
from twisted.logger import Logger

from components.mesh.decorators import Every, OnEvent, OnJoin, OnStop, Procedure, bindings_of, resolve
from components.mesh.handlers import call_handler, event_handler, invoker

log = Logger(namespace="nerve")


def transport_of(session):
    """The Twisted transport under a joined session (a TCP connection, or TLS over one), or None."""
    return getattr(session.transport, "transport", None)


def fail_outstanding_requests(session, details):
    """Fail the session's calls and publishes still waiting for an answer, as Autobahn's ApplicationSession.onLeave
    does and the session of its Component does not (docs/deviations.md, fail_calls_on_leave)."""
    error = ApplicationError(details.reason or "wamp.close.transport_lost", details.message or "left the router")
    # Private in Autobahn 26.10.2; without it a call in flight when the router dies never fires.
    session._errback_outstanding_requests(error)


def run_tick(invoke, name):
    """Run one round of a timer or hook; a failing round is logged and the timer keeps running."""
    result = defer.maybeDeferred(invoke, (), {}, None)
    return result.addErrback(lambda failure: log.failure("periodic {name} failed", failure, name=name))


def holds_events(hooks):
    """Whether one of the join hooks (func, OnJoin) holds the component's events while it runs."""
    return any(binding.hold_events for _, binding in hooks)


class EventHold:
    """A component's events, held from a join until its `@on_join(hold_events=True)` hooks have finished."""

    def __init__(self):
        self.waiting = None  # (handler, args, kwargs) in arrival order while holding, else None
        self.joins = 0

    def wrap(self, handler):
        """The event handler, holding its events while a hold is on."""
        def on_event(*args, **kwargs):
            if self.waiting is not None:
                self.waiting.append((handler, args, kwargs))
                return None
            return handler(*args, **kwargs)

        return on_event

    def begin(self, hooks):
        """Hold events from now on (before the join's subscriptions exist) when one of the join hooks (func, OnJoin)
        holds them; returns this join's number, or None when none does."""
        if not holds_events(hooks):
            return None
        self.joins += 1
        if self.waiting is None:
            self.waiting = []
        return self.joins

    def run_hooks(self, hooks, mesh, join):
        """Run the join hooks (func, OnJoin) in order; once those that hold events have finished, hand the held
        events over (`join` is begin()'s number, None when no hook holds)."""
        holding = []
        for func, binding in hooks:
            result = run_tick(invoker(func, mesh), func.__name__)
            if binding.hold_events:
                holding.append(result)
        if join is not None:
            defer.DeferredList(holding).addCallback(lambda _: self._release(join))

    def _release(self, join):
        if join != self.joins:  # a later join began its own hold: its hooks hand everything over
            return
        waiting, self.waiting = self.waiting, None
        for handler, args, kwargs in waiting or ():
            handler(*args, **kwargs)


class Binder:
    """Binds the decorated functions of targets to each new session and unbinds timers on leave."""

    def __init__(self, targets, mesh, on_transport=None, fail_outstanding=False):
        self.bindings = bindings_of(*targets)
        self.on_transport = on_transport  # called with each new session's Twisted transport (to tune the connection)
        self.fail_outstanding = fail_outstanding
        self.mesh = mesh
        self.timers = []
        self.joined = defer.Deferred()
        self.join_hooks = [(func, binding) for func, binding in self.bindings if isinstance(binding, OnJoin)]
        self.hold = EventHold()

    def start_offline_timers(self):
        """Start the timers that run whether or not a session is joined."""
        for func, binding in self.bindings:
            if isinstance(binding, Every) and binding.offline:
                timer = task.LoopingCall(run_tick, invoker(func, self.mesh), func.__name__)
                timer.start(resolve(binding.seconds, self.mesh.config), now=binding.now)

    def run_stop_hooks(self):
        """Run every on_stop function once, in name order; one that fails is logged and the others still run."""
        for func, binding in self.bindings:
            if isinstance(binding, OnStop):
                try:
                    func()
                except Exception:  # the process is stopping: say what failed, let the next hook make its writes
                    log.failure("on_stop hook {name} failed", name=func.__name__)

    @defer.inlineCallbacks
    def on_join(self, session, details):
        """Subscribe, register and start timers for every binding."""
        self.mesh.session = session
        if self.on_transport is not None:
            self.on_transport(transport_of(session))
        # Held from before the first subscription: an event may arrive while the next binding is made.
        join = self.hold.begin(self.join_hooks)
        for func, binding in self.bindings:
            try:
                yield self._bind(session, func, binding)
            except ApplicationError as error:
                log.error("cannot bind {name} to {binding}: {error}", name=func.__name__, binding=binding, error=error)
        # Hooks run after binding, so what they start can already use the session's subscriptions.
        self.hold.run_hooks(self.join_hooks, self.mesh, join)
        log.info("joined realm {realm} as {authid} ({role}), {n} bindings",
                 realm=details.realm, authid=details.authid, role=details.authrole, n=len(self.bindings))
        if not self.joined.called:
            self.joined.callback(session)

    def _bind(self, session, func, binding):
        config = self.mesh.config
        if isinstance(binding, OnEvent):
            options = SubscribeOptions(match=resolve(binding.match, config), details_arg="details")
            handler = event_handler(func, self.mesh)
            if holds_events(self.join_hooks):  # else every event would pay for the check
                handler = self.hold.wrap(handler)
            return session.subscribe(handler, resolve(binding.topic, config), options=options)
        if isinstance(binding, Procedure):
            concurrency = resolve(binding.concurrency, config)
            options = RegisterOptions(invoke=binding.invoke, concurrency=concurrency, details_arg="details")
            uri = resolve(binding.uri, config)
            return session.register(call_handler(func, self.mesh, uri), uri, options=options)
        if isinstance(binding, (OnJoin, OnStop)) or (isinstance(binding, Every) and binding.offline):
            return defer.succeed(None)
        if isinstance(binding, Every):
            invoke = invoker(func, self.mesh)
            timer = task.LoopingCall(run_tick, invoke, func.__name__)
            self.timers.append(timer)
            timer.start(resolve(binding.seconds, config), now=binding.now)
            return defer.succeed(None)
        raise TypeError(f"unknown binding {binding!r}")

    def on_leave(self, session, details):
        """Fail what is still waiting for the router (when asked to), stop the timers; they restart on the next join."""
        if self.fail_outstanding:
            fail_outstanding_requests(session, details)
        for timer in self.timers:
            if timer.running:
                timer.stop()
        self.timers = []
        self.mesh.session = None
