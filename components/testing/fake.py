"""`FakeMesh`: a component's decorated functions bound as `nerve run` binds them, driven by plain calls, no router.

    fake = FakeMesh.load("examples/alert_counter.py")
    fake.deliver("nerve.alert.web-01", {"level": "HIGH"})
    assert fake.call("app.alerts.count", "web-01") == 1
    fake.advance(5)
    assert fake.published_on("app.alerts.summary") == [{"web-01": 1}]

Events and calls go through the same wrappers the runner uses, so bad input is counted in
`fake.mesh.dropped`, handler bugs in `fake.mesh.errors`, and a procedure's `NerveError` reaches
the test as the caller's error would.
"""

import inspect
import os
from dataclasses import dataclass
from typing import Optional
from types import SimpleNamespace

from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer, task
from twisted.python.failure import Failure

from components.mesh.binder import EventHold, run_tick
from components.mesh.decorators import Every, OnEvent, OnJoin, OnStop, Procedure, bindings_of, resolve
from components.mesh.errors import ERROR_URIS, NotFound
from components.mesh.session import cancel_after
from components.mesh.handlers import call_handler, event_handler, invoker
from components.mesh.runner import load_module
from components.mesh.session import Mesh
from components.monitor.interest import wildcard_matches

# What a handler's details say about the publisher unless the test passes it to deliver().
_UNKNOWN_PUBLISHER = {"publisher": None, "publisher_authid": None, "publisher_authrole": None, "retained": None}


@dataclass(frozen=True)
class Call:
    """A call a component made through `fake.mesh.call`; result is the Deferred it got back, cancelled (as the real
    Mesh does) once `fake.advance` passes its timeout without an answer."""

    uri: str
    args: tuple
    kwargs: dict
    result: defer.Deferred
    timeout: Optional[float] = None


class _FakeSessionMesh(Mesh):
    """The real Mesh (config, dropped and error counts) with publish and call recorded by a FakeMesh."""

    # A plain attribute instead of the session-backed property, so a test can set it False to play an outage:
    # then the real Mesh answers, dropping publishes and failing calls with Unavailable.
    connected = True

    def __init__(self, config, fake):
        super().__init__(config)
        self._fake = fake

    def publish(self, topic, *args, acknowledge=False, retain=False, **kwargs):
        """Record the event in fake.published; with acknowledge=True return a Deferred that has fired."""
        if not self.connected:
            return super().publish(topic, *args, acknowledge=acknowledge, retain=retain, **kwargs)
        self._fake.published.append((topic, _payload(args, kwargs)))
        return defer.succeed(None) if acknowledge else None

    def call(self, uri, *args, timeout=None, on_progress=None, **kwargs):
        """Record the call in fake.calls_made; its Deferred fires now if fake.answer(uri, ...) was given, else waits."""
        if not self.connected:
            return super().call(uri, *args, timeout=timeout, on_progress=on_progress, **kwargs)
        return self._fake._called(uri, args, kwargs, timeout)


class FakeMesh:
    """Binds components' decorated functions without a router: deliver events, call procedures, advance timers."""

    def __init__(self, config=None):
        self.mesh = _FakeSessionMesh(config, self)
        self.clock = task.Clock()
        self.published = []
        self.calls_made = []
        self._answers = {}
        self._subscriptions = []  # (topic, match, wrapped handler)
        self._procedures = {}  # uri -> wrapped procedure
        self._join_hooks = []
        self._stop_hooks = []
        self._hold = EventHold()

    @classmethod
    def load(cls, target, *more, config=None):
        """A new FakeMesh with the decorated functions of the targets (see bind) bound."""
        fake = cls(config)
        fake.bind(target, *more)
        return fake

    def bind(self, *targets):
        """Bind the decorated functions of modules, module names, .py paths, objects or classes as a join does; returns self."""
        config = self.mesh.config
        bindings = bindings_of(*[self._component(target) for target in targets])
        # Offline timers start with the process, before any join; then the joined bindings in name order;
        # on_join hooks last, so what they start finds the subscriptions and registrations in place.
        for func, binding in bindings:
            if isinstance(binding, Every) and binding.offline:
                self._start_timer(func, binding)
        for func, binding in bindings:
            if isinstance(binding, OnEvent):
                topic, match = resolve(binding.topic, config), resolve(binding.match, config)
                self._subscriptions.append((topic, match, self._hold.wrap(event_handler(func, self.mesh))))
            elif isinstance(binding, Procedure):
                uri = resolve(binding.uri, config)
                if uri in self._procedures:
                    raise ValueError(f"{func.__name__}: {uri} is already registered by another bound function")
                self._procedures[uri] = call_handler(func, self.mesh, uri)
            elif isinstance(binding, Every) and not binding.offline:
                self._start_timer(func, binding)
        self._stop_hooks.extend(func for func, binding in bindings if isinstance(binding, OnStop))
        hooks = [(func, binding) for func, binding in bindings if isinstance(binding, OnJoin)]
        self._join_hooks.extend(hooks)
        self._run_join_hooks(hooks)
        return self

    def stop(self):
        """Run every bound on_stop function once, as when the process stops."""
        for func in self._stop_hooks:
            func()

    def rejoin(self):
        """Run every bound on_join hook again, as after a reconnect: events delivered until the hooks that hold
        events have finished (a call of theirs still waiting for fake.answer, say) wait, then are handled in order."""
        self._run_join_hooks(self._join_hooks)

    def _run_join_hooks(self, hooks):
        self._hold.run_hooks(hooks, self.mesh, self._hold.begin(hooks))

    def _component(self, target):
        """What bindings_of reads for a target: the module a name or path imports, a class's instance, or the target."""
        if isinstance(target, (str, os.PathLike)):
            return load_module(os.fspath(target))
        if inspect.isclass(target):
            parameters = inspect.signature(target).parameters
            offered = {"config": self.mesh.config, "mesh": self.mesh}
            return target(**{name: value for name, value in offered.items() if name in parameters})
        return target

    def _start_timer(self, func, binding):
        timer = task.LoopingCall(run_tick, invoker(func, self.mesh), func.__name__)
        timer.clock = self.clock
        timer.start(resolve(binding.seconds, self.mesh.config), now=binding.now)

    def deliver(self, topic, payload, **details):
        """Deliver an event to every bound @on handler whose subscription matches topic; returns how many got it."""
        event_details = SimpleNamespace(topic=topic, **{**_UNKNOWN_PUBLISHER, **details})
        receivers = [handler for pattern, match, handler in self._subscriptions if _matches(pattern, match, topic)]
        for handler in receivers:
            handler(payload, details=event_details)
        return len(receivers)

    def call(self, uri, *args, **kwargs):
        """Call a bound @procedure: its result, its NerveError raised, or a Deferred while it has not finished."""
        on_call = self._procedures.get(uri)
        if on_call is None:
            raise NotFound(f"no procedure {uri} is bound; bound: {', '.join(sorted(self._procedures)) or 'none'}")
        details = SimpleNamespace(procedure=uri, caller=None, caller_authid=None, caller_authrole=None, progress=None)
        try:
            result = on_call(*args, details=details, **kwargs)
        except ApplicationError as error:  # arguments that do not fit the signature are refused before it runs
            raise _nerve_error(error) from None
        result.addErrback(_raise_nerve_error)
        outcome = []
        result.addBoth(lambda value: outcome.append(value) or value)
        if not outcome:
            return result
        if isinstance(outcome[0], Failure):
            result.addErrback(lambda failure: None)  # raised here; unhandled, Twisted would log it again at exit
            outcome[0].raiseException()
        return outcome[0]

    def answer(self, uri, function):
        """Answer the component's calls to uri with function(*args, **kwargs): a value, a Deferred, or an error."""
        self._answers[uri] = function

    def _called(self, uri, args, kwargs, timeout=None):
        answer = self._answers.get(uri)
        result = defer.maybeDeferred(answer, *args, **kwargs) if answer else defer.Deferred()
        if timeout and not result.called:
            cancel_after(result, timeout, self.clock)
        self.calls_made.append(Call(uri, args, kwargs, result, timeout))
        return result

    def published_on(self, prefix_or_topic):
        """Payloads published on this topic, or under it when it ends with '.', in order."""
        if prefix_or_topic.endswith("."):
            return [payload for topic, payload in self.published if topic.startswith(prefix_or_topic)]
        return [payload for topic, payload in self.published if topic == prefix_or_topic]

    def advance(self, seconds):
        """Move the fake clock on by seconds, running each timer as many times as it would run in that time."""
        end = self.clock.seconds() + seconds
        # One Clock.advance over several periods runs a LoopingCall once and skips the missed rounds;
        # stepping from one due call to the next runs every round.
        while due := [call.getTime() for call in self.clock.getDelayedCalls() if call.getTime() <= end]:
            self.clock.advance(min(due) - self.clock.seconds())
        self.clock.advance(end - self.clock.seconds())


def _payload(args, kwargs):
    """An event's payload as tests read it: its one argument, its keyword arguments, or all of them."""
    if len(args) == 1 and not kwargs:
        return args[0]
    if kwargs and not args:
        return kwargs
    return (args, kwargs) if kwargs else args


def _matches(pattern, match, topic):
    """Whether a subscription to pattern with this match policy receives an event on topic, as the router decides."""
    if match == "prefix":
        return topic.startswith(pattern)
    if match == "wildcard":
        return wildcard_matches(pattern, topic)
    return topic == pattern


def _nerve_error(error):
    """The NerveError an ApplicationError with a nerve.error.* URI stands for, or the ApplicationError itself."""
    cls = ERROR_URIS.get(error.error)
    return cls(*error.args) if cls else error


def _raise_nerve_error(failure):
    failure.trap(ApplicationError)
    raise _nerve_error(failure.value)
