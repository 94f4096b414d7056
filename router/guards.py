"""What one peer may cost the router worker: deadlines, connection caps, message limits, log lines, web headers.

Installed by router/auth.py's AuthSession.onJoin (`guards.install(tuning.settings)`), which Crossbar runs
before it opens the router's transports. Each guard is switched by name like the tuning (router/tuning.py),
through the router component's extra `"tuning"` (`{"hello_deadline": false}`); the limits are the constants
below. What each one patches and the upstream change that would retire it: docs/deviations.md; what a
user sees when a limit is hit: docs/security.md.

- hello_deadline: a connection whose WAMP session has not joined HELLO_TIMEOUT seconds after it was
  accepted is closed (a TCP peer that sends nothing, a RawSocket handshake that never ends, RawSocket or
  WebSocket without HELLO); a page request must arrive whole within the same time, an idle page
  connection is closed after HTTP_IDLE_TIMEOUT.
- connection_caps: at most MAX_PENDING_PER_ADDRESS connections per address that have not joined, at most
  MAX_ANONYMOUS_PER_ADDRESS anonymous sessions per address, and in all no more connections than the file
  descriptors allow (RLIMIT_NOFILE, raised to its hard limit at start, less FD_RESERVE).
- small_messages_before_join: PRE_JOIN_MAX_MESSAGE_SIZE per message until the session has joined, then the
  transport's configured max_message_size for a backend role, ANONYMOUS_MAX_MESSAGE_SIZE for anonymous
  sessions; a WebSocket upgrade request longer than MAX_REQUEST_HEAD is refused; an oversized RawSocket
  message closes the connection with one log line instead of an unhandled-error traceback.
- short_parse_errors: a message nested deeper than the parser can follow (the recursion limit that
  router/limits.py keeps) is refused as a protocol error without its thousand-frame traceback.
- quiet_peer_errors: what a peer's bad input makes Crossbar and Autobahn log is one line, at most
  PEER_LOG_LINES lines per PEER_LOG_WINDOW seconds per kind, then a count.
- web_hardening: the router's web pages carry SECURITY_HEADERS, its 404 page and Server header name no
  version or process id, a NUL byte in a path is a 400.
"""

import resource
import sys
from urllib.parse import unquote_to_bytes
from collections import Counter
from types import MappingProxyType

import twisted.web.server
from autobahn.wamp.exception import ProtocolError
from autobahn.wamp.serializer import Serializer
from autobahn.websocket.protocol import WebSocketProtocol
from crossbar.router.protocol import WampRawSocketServerProtocol, WampWebSocketServerProtocol
from crossbar.router.session import RouterSession
from crossbar.router.unisocket import UniSocketServerProtocol
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.logger import LogPublisher, Logger, formatEvent, globalLogPublisher

from components.mesh.errors import NotAuthenticated

# A connection's WAMP session must have joined this many seconds after the connection was accepted.
HELLO_TIMEOUT = 5.0
# A page connection with no request under way is closed after this many idle seconds (Crossbar sets none).
HTTP_IDLE_TIMEOUT = 15.0
# Largest message before the session has joined: HELLO and AUTHENTICATE are well under 1 KiB.
PRE_JOIN_MAX_MESSAGE_SIZE = 64 * 1024
# Largest message of an anonymous (dashboard) session. The pages' anonymous sessions only watch and ask for
# one host's history or analysis (well under 1 KiB); a TSP solve, with its cities, runs in an operator's
# session. 1 MiB of msgpack empty maps cost the router ~75 MB while it parsed them; 256 KiB stays under 20 MB.
ANONYMOUS_MAX_MESSAGE_SIZE = 256 * 1024
# Longest HTTP request head (request line and headers) of a WebSocket upgrade.
MAX_REQUEST_HEAD = 16 * 1024
# Connections from one IP address that have not joined (page requests included), and anonymous sessions.
MAX_PENDING_PER_ADDRESS = 256
MAX_ANONYMOUS_PER_ADDRESS = 256
# File descriptors kept free of connections (log files, the node controller link, static files being served).
FD_RESERVE = 256
# Log lines of one kind caused by peers (refused logins, protocol errors, closed connections) per window.
PEER_LOG_LINES = 10
PEER_LOG_WINDOW = 10.0
# A logged line caused by a peer is cut to this many characters, an authid in it to LOGGED_AUTHID_LIMIT.
LOGGED_TEXT_LIMIT = 300
LOGGED_AUTHID_LIMIT = 64
# Sent with every response of the router's web service. The pages have no inline script or style; the
# dashboard connects back to /ws.
SECURITY_HEADERS = MappingProxyType({
    b"Content-Security-Policy": b"default-src 'self'; connect-src 'self' ws: wss:; object-src 'none'; "
                                b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    b"X-Content-Type-Options": b"nosniff",
    b"X-Frame-Options": b"DENY",
    b"Referrer-Policy": b"no-referrer",
})
SERVER_HEADER = b"nerve"
NOT_FOUND_PAGE = b"<!doctype html><meta charset=\"utf-8\"><title>Not found</title><h1>Not found</h1>\n"

GUARD_DEFAULTS = MappingProxyType({"hello_deadline": True, "connection_caps": True, "small_messages_before_join": True,
                                   "short_parse_errors": True, "quiet_peer_errors": True, "web_hardening": True})
settings = dict(GUARD_DEFAULTS)

log = Logger(namespace="router.guards")
_MISSING = object()


def clip(text, limit=LOGGED_TEXT_LIMIT):
    """text cut to limit characters, saying how long it was."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def clip_authid(message, authid):
    """A refusal message for the log: the authid in it cut to LOGGED_AUTHID_LIMIT, the whole to LOGGED_TEXT_LIMIT."""
    if isinstance(authid, str) and len(authid) > LOGGED_AUTHID_LIMIT:
        message = message.replace(authid, clip(authid, LOGGED_AUTHID_LIMIT))
    return clip(message)


def _reactor():
    from twisted.internet import reactor

    return reactor


class RateLimitedLog:
    """At most `lines` lines of one kind per `window` seconds; the rest are counted and summed up in one line."""

    def __init__(self, kind, lines=PEER_LOG_LINES, window=PEER_LOG_WINDOW, clock=None):
        self.kind, self.lines, self.window, self.clock = kind, lines, window, clock
        self.written = self.suppressed = 0
        self._closing = None

    def allow(self):
        """Whether one more line may be written now (False counts it as suppressed)."""
        if self._closing is None:
            self._closing = (self.clock or _reactor()).callLater(self.window, self._close_window)
        if self.written < self.lines:
            self.written += 1
            return True
        self.suppressed += 1
        return False

    def warn(self, logger, format, **fields):
        """logger.warn(format, **fields) if allowed."""
        if self.allow():
            logger.warn(format, **fields)

    def _close_window(self):
        self._closing = None
        if self.suppressed:
            log.warn("{suppressed} more lines of kind '{kind}' were not logged in the last {window:g} s "
                     "(at most {lines} per {window:g} s)", suppressed=self.suppressed, kind=self.kind,
                     window=self.window, lines=self.lines)
        self.written = self.suppressed = 0


# One budget per kind of line, so a flood of one kind does not hide the others.
REFUSALS = RateLimitedLog("authentication refused")
_peer_logs = {kind: RateLimitedLog(kind) for kind in ("connection", "rawsocket", "websocket", "http", "meta api")}


def _peer_line(kind, format, **fields):
    _peer_logs[kind].warn(log, format, **fields)


# --- Connections: deadline and caps --------------------------------------------------------------------------

PENDING, ANONYMOUS, JOINED = "pending", "anonymous", "joined"
_connections = {}  # Twisted transport -> _Connection, for every connection the router accepted and still has
_by_address = Counter()  # (address, PENDING or ANONYMOUS) -> connections
_limits = {"connections": None}


class _Connection:
    __slots__ = ("transport", "protocol", "address", "state", "timer", "peer")

    def __init__(self, transport, protocol, address):
        self.transport, self.protocol, self.address = transport, protocol, address
        self.state, self.timer = PENDING, None
        self.peer = _peer_text(transport)

    def count(self, state, delta):
        if self.address is not None and state in (PENDING, ANONYMOUS):
            key = (self.address, state)
            _by_address[key] += delta
            if _by_address[key] <= 0:
                del _by_address[key]

    def move(self, state):
        self.count(self.state, -1)
        self.state = state
        self.count(state, +1)

    def cancel_timer(self):
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def close(self, kind, reason):
        _peer_line(kind, "closed connection from {peer}: {reason}", peer=self.peer, reason=reason)
        self.cancel_timer()
        self.transport.abortConnection()


def _peer_text(transport):
    try:
        peer = transport.getPeer()
    except Exception:
        return "?"
    if isinstance(peer, (IPv4Address, IPv6Address)):
        return f"{peer.host}:{peer.port}"
    return type(peer).__name__


def _address_of(transport):
    """The peer's IP address; None for a unix socket (a local proxy worker), which no per-address cap applies to."""
    try:
        peer = transport.getPeer()
    except Exception:
        return None
    return peer.host if isinstance(peer, (IPv4Address, IPv6Address)) else None


def _tracking():
    return settings["hello_deadline"] or settings["connection_caps"]


def _track(protocol):
    """The record of protocol's connection: made when the connection is accepted (the universal transport's
    protocol) or at the handshake of a RawSocket or WebSocket transport of its own."""
    transport = protocol.transport
    connection = _connections.get(transport)
    if connection is not None or transport is None or not _tracking():
        return connection
    connection = _Connection(transport, protocol, _address_of(transport))
    _connections[transport] = connection
    connection.count(PENDING, +1)
    if settings["connection_caps"]:
        if len(_connections) > _limits["connections"]:
            connection.close("connection", f"{len(_connections) - 1} connections are open, the most the router's "
                                           f"file descriptors allow (RLIMIT_NOFILE less {FD_RESERVE})")
            return connection
        if connection.address is not None and _by_address[(connection.address, PENDING)] > MAX_PENDING_PER_ADDRESS:
            connection.close("connection", f"{MAX_PENDING_PER_ADDRESS} connections from {connection.address} "
                                           f"have not joined yet (MAX_PENDING_PER_ADDRESS)")
            return connection
    if settings["hello_deadline"]:
        connection.timer = _reactor().callLater(HELLO_TIMEOUT, _deadline_passed, connection)
    return connection


def _release(protocol):
    connection = _connections.pop(getattr(protocol, "transport", None), None)
    if connection is not None:
        connection.cancel_timer()
        connection.count(connection.state, -1)


def _joined(wamp_protocol, details):
    """A session joined on wamp_protocol's connection: no deadline any more, and its message limit opened."""
    anonymous = details.authmethod == "anonymous"
    if settings["small_messages_before_join"]:
        _open_message_limit(wamp_protocol, anonymous)
    connection = _connections.get(getattr(wamp_protocol, "transport", None))
    if connection is None or connection.state != PENDING:
        return
    connection.cancel_timer()
    connection.move(ANONYMOUS if anonymous else JOINED)
    if anonymous and settings["connection_caps"] and connection.address is not None \
            and _by_address[(connection.address, ANONYMOUS)] > MAX_ANONYMOUS_PER_ADDRESS:
        connection.close("connection", f"{MAX_ANONYMOUS_PER_ADDRESS} anonymous sessions from {connection.address} "
                                       f"are open (MAX_ANONYMOUS_PER_ADDRESS)")


def _deadline_passed(connection):
    connection.timer = None
    if connection.state != PENDING or connection.transport not in _connections:
        return
    protocol = connection.protocol
    if isinstance(protocol, UniSocketServerProtocol):
        protocol = protocol._proto  # what the universal transport switched to: None while the peer sent nothing
    if protocol is None:
        connection.close("connection", f"sent nothing in {HELLO_TIMEOUT:g} s")
    elif isinstance(protocol, WampRawSocketServerProtocol):
        stage = "RawSocket handshake" if not protocol._handshake_complete else "RawSocket connection"
        connection.close("connection", f"{stage}: no WAMP session joined within {HELLO_TIMEOUT:g} s")
    elif isinstance(protocol, WampWebSocketServerProtocol):
        stage = "WebSocket handshake" if protocol.state == WebSocketProtocol.STATE_CONNECTING else "WebSocket connection"
        connection.close("connection", f"{stage}: no WAMP session joined within {HELLO_TIMEOUT:g} s")
    else:
        _check_page_connection(connection, getattr(protocol, "_channel", None))


def _check_page_connection(connection, channel):
    """A page connection stays while its requests arrive whole within HELLO_TIMEOUT; it is checked every
    HELLO_TIMEOUT seconds and closed by Twisted after HTTP_IDLE_TIMEOUT without a request."""
    requests = getattr(channel, "requests", None)
    if requests is None:
        return  # not an HTTP channel we know: left to itself
    if requests and not requests[0].startedWriting:
        connection.close("http", f"page request not received in full within {HELLO_TIMEOUT:g} s")
        return
    if channel.timeOut is None:
        channel.setTimeout(HTTP_IDLE_TIMEOUT)
    connection.timer = _reactor().callLater(HELLO_TIMEOUT, _deadline_passed, connection)


def raise_file_limit():
    """Raise this process's open-file limit to its hard limit where the system allows; return the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 2**20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 2**20


# --- Message limits --------------------------------------------------------------------------------------------

def _smaller_limit(configured, limit):
    """The smaller of two message limits, where 0 means none (WebSocket)."""
    return limit if not configured else min(configured, limit)


def _close_pre_join_limit(protocol):
    # Called once a RawSocket handshake or a WebSocket upgrade is done, before any WAMP message is read.
    if isinstance(protocol, WampRawSocketServerProtocol):
        protocol._nerve_max_length = protocol.MAX_LENGTH
        protocol.MAX_LENGTH = _smaller_limit(protocol.MAX_LENGTH, PRE_JOIN_MAX_MESSAGE_SIZE)
    else:
        protocol._nerve_max_sizes = (protocol.maxMessagePayloadSize, protocol.maxFramePayloadSize)
        protocol.maxMessagePayloadSize = _smaller_limit(protocol.maxMessagePayloadSize, PRE_JOIN_MAX_MESSAGE_SIZE)
        protocol.maxFramePayloadSize = _smaller_limit(protocol.maxFramePayloadSize, PRE_JOIN_MAX_MESSAGE_SIZE)


def _open_message_limit(protocol, anonymous):
    own = getattr(protocol, "__dict__", {})
    if "_nerve_max_length" in own:
        configured = own.pop("_nerve_max_length")
        protocol.MAX_LENGTH = _smaller_limit(configured, ANONYMOUS_MAX_MESSAGE_SIZE) if anonymous else configured
    elif "_nerve_max_sizes" in own:
        message, frame = own.pop("_nerve_max_sizes")
        if anonymous:
            _send_up_to(protocol, message)
            message = _smaller_limit(message, ANONYMOUS_MAX_MESSAGE_SIZE)
            frame = _smaller_limit(frame, ANONYMOUS_MAX_MESSAGE_SIZE)
        protocol.maxMessagePayloadSize, protocol.maxFramePayloadSize = message, frame


def _send_up_to(protocol, limit):
    """Let the router send this connection messages up to `limit` (the transport's own) while it reads only smaller ones.

    Autobahn checks maxMessagePayloadSize when sending too, so the anonymous limit alone would keep a page from a
    snapshot or a digest of a few thousand hosts. The connection's sendMessage (an instance attribute over the class's
    method) lifts it for the length of each send; the reactor runs one send at a time."""
    send = protocol.sendMessage

    def send_message(*args, **kwargs):
        reading, protocol.maxMessagePayloadSize = protocol.maxMessagePayloadSize, limit
        try:
            return send(*args, **kwargs)
        finally:
            protocol.maxMessagePayloadSize = reading

    protocol.sendMessage = send_message


def _joined_yet(protocol):
    session = getattr(protocol, "_session", None)
    return getattr(session, "_session_id", None) is not None


# --- The patches ------------------------------------------------------------------------------------------------

class _Patch:
    """One attribute of a Crossbar, Autobahn or Twisted object replaced while its guard is on."""

    def __init__(self, owner, name, replacement):
        self.owner, self.name, self.replacement = owner, name, replacement
        self.original = owner.__dict__.get(name, _MISSING)
        self.inherited = getattr(owner, name, None)

    def apply(self, on):
        if on:
            setattr(self.owner, self.name, self.replacement)
        elif self.original is _MISSING:
            if self.name in self.owner.__dict__:
                delattr(self.owner, self.name)
        else:
            setattr(self.owner, self.name, self.original)


def _uni_connection_made(self):
    _track(self)


def _uni_connection_lost(self, reason):
    try:
        return _UNI_LOST.inherited(self, reason)
    finally:
        _release(self)


def _rawsocket_handshake_complete(self):
    _track(self)  # a RawSocket transport of its own (the universal transport's connection is tracked already)
    if settings["small_messages_before_join"]:
        _close_pre_join_limit(self)
    return _RAWSOCKET_HANDSHAKE.inherited(self)


def _rawsocket_connection_lost(self, reason):
    try:
        return _RAWSOCKET_LOST.inherited(self, reason)
    finally:
        _release(self)


def _websocket_open(self):
    _track(self)
    if settings["small_messages_before_join"]:
        _close_pre_join_limit(self)
    return _WEBSOCKET_OPEN.inherited(self)


def _websocket_connection_lost(self, reason):
    try:
        return _WEBSOCKET_LOST.inherited(self, reason)
    finally:
        _release(self)


def _websocket_data_received(self, data):
    # Autobahn keeps the upgrade request until it ends with an empty line, however long it grows.
    if self.state == WebSocketProtocol.STATE_CONNECTING and len(self.data) + len(data) > MAX_REQUEST_HEAD:
        _peer_line("websocket", "closed connection from {peer}: WebSocket upgrade request longer than {limit} bytes",
                   peer=_peer_text(self.transport), limit=MAX_REQUEST_HEAD)
        self.data = b""
        self.transport.abortConnection()
        return
    return _WEBSOCKET_DATA.inherited(self, data)


def _rawsocket_length_limit_exceeded(self, length):
    # Autobahn raises here, out of dataReceived: Twisted then logs an unhandled error with its traceback.
    when = "" if _joined_yet(self) else " before its session joined"
    _peer_line("rawsocket", "closed connection from {peer}: RawSocket message of {length} bytes{when}, "
                            "over the limit of {limit} bytes", peer=_peer_text(self.transport), length=length,
               when=when, limit=self.MAX_LENGTH)
    self.abort()


def _router_session_joined(self, details):
    result = _SESSION_JOIN.inherited(self, details)
    _joined(self._transport, details)
    return result


def _unserialize_shallow(self, payload, isBinary=None):
    try:
        return _UNSERIALIZE.inherited(self, payload, isBinary)
    except ProtocolError as error:
        if isinstance(error.__context__, RecursionError):
            # Raised afresh without the RecursionError: its traceback is as deep as the message is nested.
            raise ProtocolError(f"invalid serialization of WAMP message: nested deeper than the router parses "
                                f"(recursion limit {sys.getrecursionlimit()})") from None
        raise


class HardenedRequest(twisted.web.server.Request):
    """A request of the router's web service: security headers on every response, a NUL byte in the path a 400."""

    def process(self):
        for name, value in SECURITY_HEADERS.items():
            self.responseHeaders.setRawHeaders(name, [value])
        if b"\x00" in unquote_to_bytes(self.path):
            # Twisted's static File passes it to os.stat, which raises: a 500 and a traceback in the log.
            body = b"Bad request: the path holds a NUL byte.\n"
            self.setResponseCode(400)
            self.setHeader(b"content-type", b"text/plain; charset=utf-8")
            self.setHeader(b"content-length", str(len(body)).encode())
            self.write(body)
            self.finish()
            return
        return super().process()


def _plain_not_found(self, request):
    # Crossbar's page names its version, the worker's PID and the directory served.
    request.setResponseCode(404)
    request.setHeader(b"content-type", b"text/html; charset=utf-8")
    return NOT_FOUND_PAGE


class _ServerVersion:
    """Twisted's Server header, which Crossbar sets to its name and version when its transport module is imported."""

    def __init__(self):
        self.original = twisted.web.server.version

    def apply(self, on):
        twisted.web.server.version = SERVER_HEADER if on else self.original


# --- Peer-caused log lines ---------------------------------------------------------------------------------------

DROP = object()
_ON_USER_ERROR = ('{klass}.onUserError(): "{msg}"', '{klass}.onUserError(): "{msg}"\n{traceback}')


def classify(event):
    """What to do with one log event: None (write it), DROP, or (kind, one line of text) to write rate-limited."""
    text_format = event.get("log_format")
    if not isinstance(text_format, str):
        return None
    if text_format == "{tb}":
        # Autobahn's WebSocket onMessage logs the traceback of every protocol error, then one line failing the
        # connection: the line is enough.
        lines = str(event.get("tb", "")).strip().splitlines()
        return DROP if lines and lines[-1].startswith("autobahn.wamp.exception.ProtocolError") else None
    if text_format in _ON_USER_ERROR:
        klass, message = event.get("klass"), str(event.get("msg", ""))
        if klass == "AuthSession" and message.startswith(NotAuthenticated.uri):
            return DROP  # the Authenticator has logged the refusal, rate-limited
        if klass == "RouterServiceAgent":
            # A meta API call (wamp.session.get, ...) that failed on its arguments: the caller has the error.
            return "meta api", f"meta API call failed: {message}"
        return None
    if text_format.startswith("dropping connection to peer") and "closing handshake" in str(event.get("reason")):
        return DROP  # the peer did not answer the close of a connection already logged as failed
    if text_format.startswith(("failing WebSocket connection", "dropping connection to peer")):
        return "websocket", formatEvent(event)
    if "aborting connection!" in text_format or text_format.startswith("WampRawSocketServerProtocol: "):
        return "rawsocket", formatEvent(event)
    if text_format.startswith(("received invalid HTTP request line", "client wants to talk")):
        return "http", formatEvent(event)
    return None


class PeerErrorFilter:
    """An observer in front of the worker's log observers (Crossbar's JSON writer to the node controller)."""

    def __init__(self, observers):
        self.observers = list(observers)
        self.publisher = LogPublisher(*self.observers)

    def __call__(self, event):
        try:
            verdict = classify(event)
        except Exception:
            verdict = None
        if verdict is None:
            self.publisher(event)
        elif verdict is not DROP:
            kind, text = verdict
            if _peer_logs[kind].allow():
                line = {key: event[key] for key in ("log_level", "log_namespace", "log_time", "log_system")
                        if key in event}
                line.update(log_format="{text}", text=clip(" ".join(text.split())))
                self.publisher(line)


class _QuietLogs:
    """The PeerErrorFilter in front of every observer the worker's log publisher has when the guard is switched on."""

    def apply(self, on):
        observers = list(globalLogPublisher._observers)  # private: LogPublisher has no public list of its observers
        installed = [observer for observer in observers if isinstance(observer, PeerErrorFilter)]
        if on and not installed:
            for observer in observers:
                globalLogPublisher.removeObserver(observer)
            globalLogPublisher.addObserver(PeerErrorFilter(observers))
        elif not on:
            for peer_filter in installed:
                globalLogPublisher.removeObserver(peer_filter)
                for observer in peer_filter.observers:
                    globalLogPublisher.addObserver(observer)


_UNI_MADE = _Patch(UniSocketServerProtocol, "connectionMade", _uni_connection_made)
_UNI_LOST = _Patch(UniSocketServerProtocol, "connectionLost", _uni_connection_lost)
_RAWSOCKET_HANDSHAKE = _Patch(WampRawSocketServerProtocol, "_on_handshake_complete", _rawsocket_handshake_complete)
_RAWSOCKET_LOST = _Patch(WampRawSocketServerProtocol, "connectionLost", _rawsocket_connection_lost)
_RAWSOCKET_LENGTH = _Patch(WampRawSocketServerProtocol, "lengthLimitExceeded", _rawsocket_length_limit_exceeded)
_WEBSOCKET_OPEN = _Patch(WampWebSocketServerProtocol, "onOpen", _websocket_open)
_WEBSOCKET_LOST = _Patch(WampWebSocketServerProtocol, "connectionLost", _websocket_connection_lost)
_WEBSOCKET_DATA = _Patch(WampWebSocketServerProtocol, "_dataReceived", _websocket_data_received)
_SESSION_JOIN = _Patch(RouterSession, "onJoin", _router_session_joined)
_UNSERIALIZE = _Patch(Serializer, "unserialize", _unserialize_shallow)
_QUIET = _QuietLogs()
_web = []


def _web_patches():
    """The web service's patches, made on first use: Crossbar's web modules are imported only by a router worker."""
    if not _web:
        from crossbar.common.twisted import web as crossbar_web
        from crossbar.webservice.base import Resource404
        from crossbar.worker import transport as crossbar_transport  # sets Twisted's Server header to Crossbar's

        class HardenedSite(crossbar_web.Site):
            """Crossbar's web Site making HardenedRequests (its HSTS option still wraps them)."""

            requestFactory = HardenedRequest

        _web.extend([_Patch(crossbar_transport, "Site", HardenedSite), _Patch(Resource404, "render_GET", _plain_not_found),
                     _ServerVersion()])
    return _web

# Which patches each guard needs (the connection hooks serve three guards).
PATCHES = {
    "connections": (_UNI_MADE, _UNI_LOST, _RAWSOCKET_HANDSHAKE, _RAWSOCKET_LOST, _WEBSOCKET_OPEN, _WEBSOCKET_LOST,
                    _SESSION_JOIN),
    "small_messages_before_join": (_RAWSOCKET_LENGTH, _WEBSOCKET_DATA),
    "short_parse_errors": (_UNSERIALIZE,),
    "quiet_peer_errors": (_QUIET,),
}


def install(overrides=None):
    """Switch the guards as overrides say (a mapping with the GUARD_DEFAULTS names; others ignored); idempotent.

    router/tuning.py's settings can be passed as they are: they hold these names too.
    """
    overrides = dict(overrides or {})
    settings.update({name: bool(overrides.get(name, default)) for name, default in GUARD_DEFAULTS.items()})
    on = dict(settings, connections=settings["hello_deadline"] or settings["connection_caps"]
              or settings["small_messages_before_join"])
    for guard, patches in PATCHES.items():
        for patch in patches:
            patch.apply(on[guard])
    for patch in _web_patches() if settings["web_hardening"] else _web:
        patch.apply(settings["web_hardening"])
    _limits["connections"] = max(64, raise_file_limit() - FD_RESERVE)
    return dict(settings)


def restore():
    """Put back every Crossbar, Autobahn and Twisted behaviour install changed (for tests and embedding)."""
    install({name: False for name in GUARD_DEFAULTS})
    settings.update(GUARD_DEFAULTS)

