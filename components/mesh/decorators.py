"""Decorators that only annotate plain functions; `components.mesh.runner` binds them when a session joins.

Any option may be a callable taking the process config, so a component can take it from
flags (`concurrency=lambda config: config.concurrency`): it is resolved when the runner binds.
"""

from dataclasses import dataclass
from typing import Any, Callable, Union

BINDINGS_ATTR = "__nerve_bindings__"
MATCH_POLICIES = ("exact", "prefix", "wildcard")
INVOKE_POLICIES = ("single", "roundrobin", "random", "first", "last")

Setting = Union[Any, Callable[[Any], Any]]


@dataclass(frozen=True)
class OnEvent:
    """A subscription: call the function with each event on topic."""

    topic: Setting
    match: Setting = "exact"


@dataclass(frozen=True)
class Procedure:
    """A registration: the function answers calls to uri."""

    uri: str
    invoke: str = "single"
    concurrency: Setting = None


@dataclass(frozen=True)
class Every:
    """A timer: call the function every `seconds` while joined, or for the whole run when offline is true."""

    seconds: Setting
    now: bool = True
    offline: bool = False


@dataclass(frozen=True)
class OnJoin:
    """A hook: call the function after every join, once the other bindings are in place; with hold_events, the
    component's events wait until it has finished."""

    hold_events: bool = False


@dataclass(frozen=True)
class OnStop:
    """A hook: call the function once when the process stops, after its session has left."""


def _annotate(binding):
    def annotate(func):
        setattr(func, BINDINGS_ATTR, getattr(func, BINDINGS_ATTR, ()) + (binding,))
        return func

    return annotate


def on(topic, match="exact"):
    """Mark a function as the handler of events on topic (match: exact, prefix or wildcard)."""
    if not callable(match) and match not in MATCH_POLICIES:
        raise ValueError(f"match must be one of {MATCH_POLICIES}, not {match!r}")
    return _annotate(OnEvent(topic, match))


def procedure(uri, invoke="single", concurrency=None):
    """Mark a function as the callee of uri, shared under the invoke policy, at most `concurrency` calls at once."""
    if invoke not in INVOKE_POLICIES:
        raise ValueError(f"invoke must be one of {INVOKE_POLICIES}, not {invoke!r}")
    return _annotate(Procedure(uri, invoke, concurrency))


def every(seconds, now=True, offline=False):
    """Mark a function to run every `seconds` while joined (first run at join when now is true).

    With offline=True it runs from process start to exit, joined or not (a tracker measures
    through a router outage).
    """
    return _annotate(Every(seconds, now, offline))


def on_join(func=None, *, hold_events=False):
    """Mark a function to run after every join (and rejoin), once subscriptions and registrations exist.

    As `@on_join(hold_events=True)`, the component's events that arrive from the join until the function has
    finished (its Deferred fired or failed) wait, and are then handled in arrival order: a hook that loads state
    (a gap to fill, a listing to read) never sees an event before that state. Such a hook must end: give its
    calls a timeout, or the events wait in memory.
    """
    if func is None:
        return _annotate(OnJoin(hold_events))
    return _annotate(OnJoin())(func)


def on_stop(func):
    """Mark a function to run once when the process stops (SIGINT, SIGTERM or its end), after the session has left:
    the place to make buffered writes durable, so a stop loses nothing a SIGKILL would."""
    return _annotate(OnStop())(func)


def bindings_of(*targets):
    """Every (function, binding) pair found on the given modules or objects, in name order."""
    found = []
    for target in targets:
        for name in sorted(dir(target)):
            if name.startswith("__"):
                continue
            func = getattr(target, name, None)
            for binding in getattr(func, BINDINGS_ATTR, ()):
                found.append((func, binding))
    return found


def resolve(setting, config):
    """A setting's value: called with the config when it is a callable."""
    return setting(config) if callable(setting) else setting
