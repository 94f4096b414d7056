"""Wrapping decorated functions as WAMP handlers: arguments checked, `details`/`mesh` passed when asked for, errors mapped.

A handler receives the event's or call's positional and keyword arguments; if its signature
names a `details` or `mesh` parameter, it gets the WAMP details or the `Mesh` too.
"""

import inspect

from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer
from twisted.logger import Logger

from components.mesh.errors import InvalidArgument, NerveError

log = Logger(namespace="nerve")


def invoker(func, mesh):
    """A function (args, kwargs, details) -> result that passes `details`/`mesh` when func asks for them."""
    parameters = inspect.signature(func).parameters
    wants_details, wants_mesh = "details" in parameters, "mesh" in parameters

    def invoke(args, kwargs, details):
        extra = {}
        if wants_details:
            extra["details"] = details
        if wants_mesh:
            extra["mesh"] = mesh
        return func(*args, **kwargs, **extra)

    invoke.signature = inspect.signature(func)
    invoke.extra_names = [name for name, wanted in (("details", wants_details), ("mesh", wants_mesh)) if wanted]
    return invoke


def _argument_mismatch(invoke, args, kwargs):
    """Why args and kwargs do not fit the invoked function's signature, or None when they do."""
    try:
        invoke.signature.bind(*args, **kwargs, **{name: None for name in invoke.extra_names})
    except TypeError as error:
        return str(error)
    return None


def event_handler(func, mesh):
    """Wrap an event handler so bad input is counted and dropped instead of killing the consumer."""
    invoke = invoker(func, mesh)

    def on_event(*args, details=None, **kwargs):
        source = getattr(details, "topic", None) or func.__name__
        # Events are one payload; only another shape pays for the signature check, which tells a sender's
        # wrong arguments (dropped, counted) from a bug in the handler (logged).
        mismatch = (kwargs or len(args) != 1) and _argument_mismatch(invoke, args, kwargs)
        if mismatch:
            mesh.count_dropped(source, InvalidArgument(mismatch))
            return None
        try:
            result = invoke(args, kwargs, details)
        except NerveError as error:
            mesh.count_dropped(source, error)
            return None
        except Exception:  # a handler bug must not unsubscribe the consumer; it is logged and counted
            mesh.errors[func.__name__] += 1
            log.failure("event handler {name} failed on {source}", name=func.__name__, source=source)
            return None
        if isinstance(result, defer.Deferred):
            result.addErrback(lambda failure: log.failure("event handler {name} failed", failure, name=func.__name__))
        return None

    return on_event


def to_application_error(failure, uri):
    """Turn a failure raised by a procedure into the ApplicationError the caller sees."""
    error = failure.value
    if isinstance(error, ApplicationError):
        return failure
    if isinstance(error, NerveError):
        raise ApplicationError(error.uri, str(error))
    log.failure("procedure {uri} failed", failure, uri=uri)
    raise ApplicationError(NerveError.uri, f"{uri} failed inside the callee: {type(error).__name__}: {error}")


def call_handler(func, mesh, uri):
    """Wrap a procedure: check the arguments against its signature, map errors to nerve.error.* URIs."""
    invoke = invoker(func, mesh)

    def on_call(*args, details=None, **kwargs):
        mismatch = _argument_mismatch(invoke, args, kwargs)
        if mismatch:
            raise ApplicationError(InvalidArgument.uri, f"{uri}: {mismatch}")
        result = defer.maybeDeferred(invoke, args, kwargs, details)
        return result.addErrback(to_application_error, uri)

    return on_call
