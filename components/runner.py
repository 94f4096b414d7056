"""Runs a component: joins the realm, binds the decorated functions on every join, reconnects, stops cleanly.

A handler receives the event's or call's positional and keyword arguments; if its
signature names a `details` or `mesh` parameter, the runner passes the WAMP details
or the `Mesh` too.
"""

import functools
import importlib
import importlib.util
import inspect
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import txaio

txaio.use_twisted()

import msgpack  # noqa: E402
from autobahn.twisted.component import Component  # noqa: E402
from autobahn.twisted.wamp import Session  # noqa: E402
from autobahn.wamp import message  # noqa: E402
from autobahn.wamp.exception import ApplicationError, SerializationError, TransportLost  # noqa: E402
from autobahn.wamp.request import PublishRequest  # noqa: E402
from autobahn.wamp.types import (  # noqa: E402
    CallOptions,
    EventDetails,
    Publication,
    PublishOptions,
    RegisterOptions,
    SubscribeOptions,
)
from twisted.internet import defer, task  # noqa: E402
from twisted.logger import (  # noqa: E402
    FilteringLogObserver,
    LogLevel,
    Logger,
    PredicateResult,
    formatEvent,
    globalLogBeginner,
)

from components.config import MeshConfig  # noqa: E402
from components.decorators import Every, OnEvent, OnJoin, Procedure, bindings_of, resolve  # noqa: E402
from components.errors import InvalidArgument, NerveError, NotAuthenticated  # noqa: E402
from components.framing import count_framed, frames_plain_msgpack, send_framed, tune_connection  # noqa: E402

log = Logger(namespace="nerve")
EXIT_AUTH_FAILED = 3


def configure_logging(level, name):
    """Send Twisted/txaio logging to stderr as one short line per event, at or above level."""

    def write(event):
        text = formatEvent(event)
        if event.get("log_failure") is not None and event["log_level"] >= LogLevel.error:
            text += "\n" + event["log_failure"].getTraceback()
        sys.stderr.write(f"{name}: {text}\n")

    ours = LogLevel.levelWithName(level)
    # Autobahn and Twisted narrate every connect and signal at info; only nerve's own info lines are shown.
    theirs = ours if ours == LogLevel.debug else max(ours, LogLevel.warn)

    def predicate(event):
        namespace = event.get("log_namespace") or ""
        floor = ours if namespace.startswith("nerve") else theirs
        level = event["log_level"]
        if namespace.startswith("autobahn") and (event.get("log_format") or "").startswith("trying transport"):
            level = LogLevel.info  # autobahn says this at warn on every (re)connect attempt
        return PredicateResult.yes if level >= floor else PredicateResult.no

    globalLogBeginner.beginLoggingTo([FilteringLogObserver(write, [predicate])], redirectStandardIO=False)
    txaio.set_global_log_level(level)


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


# Built once: a tracker simulating thousands of hosts publishes thousands of times a second.
PUBLISH_OPTIONS = {(acknowledge, retain): PublishOptions(acknowledge=acknowledge, retain=retain) if (acknowledge or retain) else None
                   for acknowledge in (False, True) for retain in (False, True)}
# For the options NerveSession frames itself (not retained): the options dict Autobahn would write, and whether the
# router acknowledges the publish.
_FRAMED_PUBLISH_OPTIONS = {options: (message.Publish(1, "a", **(options.message_attr() if options else {})).marshal_options(),
                                     bool(options and options.acknowledge))
                           for options in (PUBLISH_OPTIONS[False, False], PUBLISH_OPTIONS[True, False])}
_CHECKED_TOPICS = set()
_CHECKED_TOPICS_LIMIT = 65536


class Mesh:
    """The live session as handlers see it: publish, call, the config, and counts of dropped input."""

    def __init__(self, config):
        self.config = config
        self.session = None
        self.dropped = Counter()
        self.errors = Counter()

    @property
    def connected(self):
        """Whether a session is joined right now."""
        return self.session is not None and self.session.is_attached()

    def publish(self, topic, *args, acknowledge=False, retain=False, **kwargs):
        """Publish an event; with acknowledge=True the result is a Deferred that fails if refused."""
        if not self.connected:
            return defer.fail(ApplicationError("nerve.error.unavailable", "not connected to the router")) if acknowledge else None
        return self.session.publish(topic, *args, options=PUBLISH_OPTIONS[acknowledge, retain], **kwargs)

    def call(self, uri, *args, timeout=None, on_progress=None, **kwargs):
        """Call a procedure; a timeout is enforced on this side by cancelling (router-side timeouts leak slots)."""
        if not self.connected:
            return defer.fail(ApplicationError("nerve.error.unavailable", "not connected to the router"))
        options = CallOptions(on_progress=on_progress) if on_progress else None
        # Autobahn raises a call it cannot send (too big, unserializable) at once; callers get it as a failure.
        result = defer.maybeDeferred(self.session.call, uri, *args, options=options, **kwargs)
        if timeout:
            from twisted.internet import reactor

            timer = reactor.callLater(timeout, result.cancel)
            result.addBoth(lambda value: (timer.active() and timer.cancel(), value)[1])
        return result

    def count_dropped(self, source, error):
        """Count one dropped event from source; log the first of each kind so floods stay quiet."""
        self.dropped[source] += 1
        if self.dropped[source] in (1, 100, 10000):
            log.warn("dropped event #{n} from {source}: {error}", n=self.dropped[source], source=source, error=error)


def _invoker(func, mesh):
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
    invoke = _invoker(func, mesh)

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

    on_event.handles_its_failures = True
    return on_event


def _is_nerve_handler(subscription):
    handler = subscription.handler
    return handler.obj is None and handler.details_arg == "details" and hasattr(handler.fn, "handles_its_failures")


# The EVENT details a plainly delivered event may carry, with the type Autobahn requires of each; an event with any
# other detail (encryption, acknowledged delivery, forwarding, ...) takes Autobahn's path.
_PLAIN_EVENT_DETAILS = MappingProxyType({"topic": str, "publisher": int, "publisher_authid": str, "publisher_authrole": str,
                                         "retained": bool})
# The first two bytes of a MessagePack PUBLISHED ([17, request, publication]) and of an EVENT with or without arguments
# ([36, subscription, publication, details(, args)]): what NerveSession decodes itself.
_PUBLISHED_HEAD = bytes([0x93, message.Published.MESSAGE_TYPE])
_EVENT_HEADS = (bytes([0x94, message.Event.MESSAGE_TYPE]), bytes([0x95, message.Event.MESSAGE_TYPE]))
_MAX_WAMP_ID = 2**53


def _is_wamp_id(value):
    """Whether value is a WAMP id as Autobahn checks one: an int from 0 to 2**53."""
    return type(value) is int and 0 <= value <= _MAX_WAMP_ID


class NerveSession(Session):
    """A WAMP session that hands plain events straight to nerve's event handlers and frames plain publishes itself.

    Autobahn wraps every handler call in a Deferred with success and error callbacks. An
    event_handler already counts and logs every failure and returns nothing, so for it that
    wrapping only costs time, and an orchestrator receives one event per host per second.
    Over RawSocket and MessagePack such events, and the acknowledgements of publishes, are
    decoded here from the MessagePack list, without Autobahn's message objects: 13 µs an event
    where unpacking it takes 6. Encrypted payloads, acknowledged delivery, other handlers and
    every other message keep Autobahn's path.
    """

    def onOpen(self, transport):
        """Start the session; over RawSocket and MessagePack, receive through _string_received."""
        if frames_plain_msgpack(transport):
            transport.stringReceived = functools.partial(self._string_received, transport)
        return super().onOpen(transport)

    def _string_received(self, transport, payload):
        """The transport's stringReceived: a PUBLISHED or plain EVENT handled here, anything else by Autobahn."""
        head = payload[:2]
        if head == _PUBLISHED_HEAD or head in _EVENT_HEADS:
            try:
                raw = msgpack.unpackb(payload)
            except (ValueError, msgpack.UnpackException):
                raw = None  # Autobahn's path below says what is wrong and closes the connection
            if raw is not None and self._handle_raw(raw):
                count_framed(transport._serializer, payload, sent=False)
                return None
        return type(transport).stringReceived(transport, payload)

    def _handle_raw(self, raw):
        """Deliver an unpacked PUBLISHED or plain EVENT as Autobahn would; False (nothing done) for anything else."""
        if raw[0] == message.Published.MESSAGE_TYPE:
            request_id, publication = raw[1], raw[2]
            request = self._publish_reqs.pop(request_id, None) if _is_wamp_id(request_id) and _is_wamp_id(publication) else None
            if request is None:
                return False  # Autobahn's path says the request is unknown
            if not txaio.is_called(request.on_reply):  # an acknowledgement of a cancelled publish is dropped, as Autobahn does
                txaio.resolve(request.on_reply, Publication(publication, was_encrypted=request.was_encrypted))
            return True
        subscription_id, publication, details = raw[1], raw[2], raw[3]
        args = raw[4] if len(raw) == 5 else []
        if not (_is_wamp_id(subscription_id) and _is_wamp_id(publication) and type(details) is dict and type(args) is list
                and all(type(value) is _PLAIN_EVENT_DETAILS.get(key) for key, value in details.items())):
            return False
        subscriptions = self._plain_subscriptions(subscription_id)
        if subscriptions is None:
            return False
        self._deliver(subscriptions, publication, args, {}, details.get("topic"), publisher=details.get("publisher"),
                      publisher_authid=details.get("publisher_authid"), publisher_authrole=details.get("publisher_authrole"),
                      retained=details.get("retained"))
        return True

    def _plain_subscriptions(self, subscription_id):
        """The subscriptions of subscription_id when every one is a nerve event handler, else None."""
        subscriptions = self._subscriptions.get(subscription_id)
        return subscriptions if subscriptions and all(map(_is_nerve_handler, subscriptions)) else None

    @staticmethod
    def _deliver(subscriptions, publication, args, kwargs, topic, **publisher_details):
        """Call each subscription's handler with the event and its EventDetails, as Autobahn would."""
        for subscription in subscriptions:
            details = EventDetails(subscription, publication, topic=topic or subscription.topic, **publisher_details)
            subscription.handler.fn(*args, details=details, **kwargs)

    def onMessage(self, msg):
        """Dispatch a plain EVENT to handlers that handle their own failures; anything else as Autobahn does."""
        if (type(msg) is message.Event and msg.enc_algo is None and not msg.x_acknowledged_delivery
                and not (msg.kwargs and "details" in msg.kwargs)):  # Autobahn lets its own details win over the sender's
            subscriptions = self._plain_subscriptions(msg.subscription)
            if subscriptions is not None:
                self._deliver(subscriptions, msg.publication, msg.args or (), msg.kwargs or {}, msg.topic,
                              publisher=msg.publisher, publisher_authid=msg.publisher_authid,
                              publisher_authrole=msg.publisher_authrole, retained=msg.retained,
                              transaction_hash=msg.transaction_hash, forward_for=msg.forward_for)
                return None
        return super().onMessage(msg)

    def publish(self, topic, *args, options=None, **kwargs):
        """Publish as Autobahn does; a plain publish over RawSocket and MessagePack is framed here.

        Autobahn checks the URI, builds a message object, marshals it and serializes that: 16 µs a
        publish, where packing the same list takes 5 µs, and a simulator publishes thousands a second.
        The bytes are the same (tested); retained or encrypted publishes and keyword arguments keep
        Autobahn's path.
        """
        transport = self._transport
        framed = _FRAMED_PUBLISH_OPTIONS.get(options) if not kwargs and not self._payload_codec else None
        if framed is None or type(topic) is not str or not frames_plain_msgpack(transport):
            return super().publish(topic, *args, options=options, **kwargs)
        options_sent, acknowledge = framed
        if topic not in _CHECKED_TOPICS:
            message.check_or_raise_uri(topic, message="NerveSession.publish()", strict=False, allow_empty_components=False,
                                       allow_none=False)
            if len(_CHECKED_TOPICS) >= _CHECKED_TOPICS_LIMIT:
                _CHECKED_TOPICS.clear()
            _CHECKED_TOPICS.add(topic)
        if not transport.isOpen():
            raise TransportLost()
        request_id = self._request_id_gen.next()
        raw = [message.Publish.MESSAGE_TYPE, request_id, options_sent, topic]
        if args:  # Autobahn's marshal leaves out an empty argument list
            raw.append(args)
        try:
            payload = msgpack.packb(raw, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as error:
            raise SerializationError(f"unable to serialize WAMP application payload ({error})") from None
        send_framed(transport, payload)  # an acknowledgement can only arrive after this returns to the reactor
        if not acknowledge:
            return None
        on_reply = txaio.create_future()
        self._publish_reqs[request_id] = PublishRequest(request_id, on_reply, was_encrypted=False)
        return on_reply


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
    invoke = _invoker(func, mesh)

    def on_call(*args, details=None, **kwargs):
        mismatch = _argument_mismatch(invoke, args, kwargs)
        if mismatch:
            raise ApplicationError(InvalidArgument.uri, f"{uri}: {mismatch}")
        result = defer.maybeDeferred(invoke, args, kwargs, details)
        return result.addErrback(to_application_error, uri)

    return on_call


def transport_of(session):
    """The Twisted transport under a joined session (a TCP connection, or TLS over one), or None."""
    return getattr(getattr(session, "_transport", None), "transport", None)


class Binder:
    """Binds the decorated functions of targets to each new session and unbinds timers on leave."""

    def __init__(self, targets, mesh):
        self.bindings = bindings_of(*targets)
        self.mesh = mesh
        self.timers = []
        self.joined = defer.Deferred()
        self.join_hooks = [func for func, binding in self.bindings if isinstance(binding, OnJoin)]

    def start_offline_timers(self):
        """Start the timers that run whether or not a session is joined."""
        for func, binding in self.bindings:
            if isinstance(binding, Every) and binding.offline:
                timer = task.LoopingCall(self._tick, _invoker(func, self.mesh), func.__name__)
                timer.start(resolve(binding.seconds, self.mesh.config), now=binding.now)

    @defer.inlineCallbacks
    def on_join(self, session, details):
        """Subscribe, register and start timers for every binding."""
        self.mesh.session = session
        mesh_config = self.mesh.config.mesh
        tune_connection(transport_of(session), mesh_config.tcp_nodelay, mesh_config.large_messages_at_once)
        for func, binding in self.bindings:
            try:
                yield self._bind(session, func, binding)
            except ApplicationError as error:
                log.error("cannot bind {name} to {binding}: {error}", name=func.__name__, binding=binding, error=error)
        for hook in self.join_hooks:
            # Hooks run after binding, so what they start can already use the session's subscriptions.
            self._tick(_invoker(hook, self.mesh), hook.__name__)
        log.info("joined realm {realm} as {authid} ({role}), {n} bindings",
                 realm=details.realm, authid=details.authid, role=details.authrole, n=len(self.bindings))
        if not self.joined.called:
            self.joined.callback(session)

    def _bind(self, session, func, binding):
        config = self.mesh.config
        if isinstance(binding, OnEvent):
            options = SubscribeOptions(match=resolve(binding.match, config), details_arg="details")
            return session.subscribe(event_handler(func, self.mesh), resolve(binding.topic, config), options=options)
        if isinstance(binding, Procedure):
            concurrency = resolve(binding.concurrency, config)
            options = RegisterOptions(invoke=binding.invoke, concurrency=concurrency, details_arg="details")
            uri = resolve(binding.uri, config)
            return session.register(call_handler(func, self.mesh, uri), uri, options=options)
        if isinstance(binding, OnJoin) or (isinstance(binding, Every) and binding.offline):
            return defer.succeed(None)
        if isinstance(binding, Every):
            invoke = _invoker(func, self.mesh)
            timer = task.LoopingCall(self._tick, invoke, func.__name__)
            self.timers.append(timer)
            timer.start(resolve(binding.seconds, config), now=binding.now)
            return defer.succeed(None)
        raise TypeError(f"unknown binding {binding!r}")

    @staticmethod
    def _tick(invoke, name):
        # A failing tick is logged and the timer keeps running: one bad round must not stop a component.
        result = defer.maybeDeferred(invoke, (), {}, None)
        return result.addErrback(lambda failure: log.failure("periodic {name} failed", failure, name=name))

    def on_leave(self, session, details):
        """Stop the timers; they restart on the next join."""
        for timer in self.timers:
            if timer.running:
                timer.stop()
        self.timers = []
        self.mesh.session = None


def run(targets, config, mesh=None, name="nerve"):
    """Run targets (modules or objects with decorated functions) until SIGINT/SIGTERM; returns the exit code."""
    mesh_config = config.mesh
    configure_logging(mesh_config.log_level, name)
    mesh = mesh or Mesh(config)
    binder = Binder(targets, mesh)
    exit_code = [0]

    def is_fatal(error):
        # A refused credential does not get better by retrying: say why and exit.
        if isinstance(error, ApplicationError) and error.error == NotAuthenticated.uri:
            log.critical("router refused the credential: {message}", message=error.error_message())
            exit_code[0] = EXIT_AUTH_FAILED
            return True
        return False

    component = Component(
        transports=[mesh_config.transport()],
        realm=mesh_config.realm,
        authentication=mesh_config.authentication(),
        is_fatal=is_fatal,
        session_factory=NerveSession,
    )
    component.on("join", binder.on_join)
    component.on("leave", binder.on_leave)

    def main(reactor):
        reactor.addSystemEventTrigger("before", "shutdown", lambda: _stop(component))
        reactor.callWhenRunning(_stop_once_on_signals, reactor)
        reactor.callWhenRunning(binder.start_offline_timers)
        done = component.start(reactor)
        done.addErrback(lambda failure: exit_code.__setitem__(0, exit_code[0] or 1))
        return done

    try:
        task.react(main)
    except SystemExit as stop:
        return exit_code[0] or (stop.code if isinstance(stop.code, int) else 0)
    return exit_code[0]


def _stop_once_on_signals(reactor):
    """SIGINT and SIGTERM stop the reactor once; a second signal during shutdown is ignored."""
    import signal

    def on_signal(signum, frame):
        if reactor.running and not getattr(reactor, "_nerve_stopping", False):
            reactor._nerve_stopping = True
            log.info("stopping on {name}", name=signal.Signals(signum).name)
            reactor.callFromThread(reactor.stop)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)


def _stop(component):
    """Leave the session cleanly, waiting at most two seconds."""
    if component._done_f is None or component._done_f.called:
        return None  # the component already ended (e.g. a refused credential)
    stopping = component.stop()
    if isinstance(stopping, defer.Deferred):
        from twisted.internet import reactor

        return stopping.addTimeout(2, reactor).addErrback(lambda failure: None)
    return None


def run_once(action, config, name="nerve"):
    """Join once (no retries), run action(mesh) -> Deferred, leave; returns 0, or 1 with the error printed."""
    mesh_config = config.mesh
    configure_logging(mesh_config.log_level, name)
    mesh = Mesh(config)
    outcome = {"code": 1}
    transport = dict(mesh_config.transport(), max_retries=0)
    component = Component(transports=[transport], realm=mesh_config.realm, authentication=mesh_config.authentication())

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
        done.addErrback(lambda failure: sys.stderr.write(f"{name}: cannot reach the router at {mesh_config.router}\n"))
        return done

    try:
        task.react(main)
    except SystemExit:
        pass
    return outcome["code"]
