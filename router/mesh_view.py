"""Who is on the mesh, as anonymous eyes may see it: the router-side service behind the dashboard's mesh panel.

The router's meta API (`wamp.session.get`, `wamp.session.on_join`) hands out every session's transport:
peer address, and for WebSocket sessions the full HTTP request headers (Cookie, Authorization,
X-Forwarded-For). The anonymous dashboard role may not use it. This service runs in the router's own
session (router/auth.py's AuthSession, whose role may use the meta API), follows the meta events and
offers only what the mesh panel shows:

- `nerve.mesh.sessions` (procedure): `{sessions, anonymous, analyzers}`: each backend (authenticated)
  session as `{session, authid, authrole}`; anonymous sessions only as a count; the sessions serving
  `nerve.analyze` as `{session, authid}`.
- `nerve.mesh.joined` / `nerve.mesh.left` (events): a backend session as `{session, authid, authrole}`,
  or, when an anonymous session joined or left, `{anonymous: count}`. A backend session's `nerve.mesh.left` also
  says `goodbye`: true when the session said GOODBYE (a component stopping cleanly), false when its transport was
  lost (a killed process, a dead machine or network). The meta event `wamp.session.on_leave` carries only the
  session id in both cases, so `record_leaves` wraps Crossbar's `RouterSession.onLeave`, the one place that is told
  (the close reason: the peer's GOODBYE reason, or none when the transport went away), as router/metering.py wraps
  its message handling.
- `nerve.mesh.analyzers` (event): `{analyzers: [{session, authid}]}` whenever the set of sessions serving
  `nerve.analyze` changed.

Nothing else of a session (transport, headers, addresses, authextra, authmethod) ever leaves this module.
"""

from autobahn.wamp.exception import ApplicationError
from crossbar.router.session import RouterSession
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger

SESSIONS_URI = "nerve.mesh.sessions"
JOINED_TOPIC = "nerve.mesh.joined"
LEFT_TOPIC = "nerve.mesh.left"
ANALYZERS_TOPIC = "nerve.mesh.analyzers"
ANALYZE_URI = "nerve.analyze"
# What the service reads and follows of the router's meta API (its role's permissions in .crossbar/config.json).
META_EVENTS = ("wamp.session.on_join", "wamp.session.on_leave", "wamp.registration.on_register",
               "wamp.registration.on_unregister")


def public_record(details):
    """The fields of a session anyone may see: its id, authid and role; None for anything malformed."""
    if not isinstance(details, dict) or not isinstance(details.get("session"), int):
        return None
    return {"session": details["session"], "authid": str(details.get("authid")), "authrole": str(details.get("authrole"))}


ANONYMOUS_ROLE = "dashboard"
MAX_LEAVES_KEPT = 10000  # leaves nobody read (another realm's sessions): dropped beyond this, so memory stays bounded

# session id -> whether it said GOODBYE, filled as sessions leave, read once by MeshView._announce_left.
leaves = {}
_original_on_leave = RouterSession.onLeave


def _recording_on_leave(self, details):
    session_id = getattr(self, "_session_id", None) or getattr(self, "_previous_session_id", None)
    if session_id is not None:
        if len(leaves) > MAX_LEAVES_KEPT:
            leaves.clear()
        leaves[session_id] = details is not None and details.reason is not None
    return _original_on_leave(self, details)


def record_leaves(enabled=True):
    """Record, for every session that leaves the router worker, whether it said GOODBYE (idempotent; enabled=False
    puts Crossbar's own onLeave back, and nerve.mesh.left then says goodbye: false for every session)."""
    RouterSession.onLeave = _recording_on_leave if enabled else _original_on_leave


def is_anonymous(details):
    """Whether a session joined without credentials (the browser dashboard); behind Crossbar proxy workers the
    router sees the proxy's authmethod, so the anonymous role counts too."""
    return details.get("authmethod") == "anonymous" or details.get("authrole") == ANONYMOUS_ROLE


class MeshView:
    """Follows the router's sessions and the callees of nerve.analyze; serves and publishes the filtered view."""

    log = Logger()

    def __init__(self, session):
        self.session = session
        self.backend = {}  # session id -> public record
        self.anonymous = set()  # session ids, never published
        self.analyzers = []  # [{session, authid}], sorted by authid
        self._listing = None  # ids that left while the initial listing ran
        self._stale = False  # nerve.analyze's callees may have changed since they were last read
        self._refreshing = False

    @inlineCallbacks
    def start(self):
        """Subscribe to the meta events, register nerve.mesh.sessions, then read who is already there."""
        self._listing = set()
        handlers = (self._on_join, self._on_leave, self._on_registration_change, self._on_registration_change)
        for topic, handler in zip(META_EVENTS, handlers):
            yield self.session.subscribe(handler, topic)
        yield self.session.register(self.sessions, SESSIONS_URI)
        own = self.session.session_id
        for session_id in (yield self.session.call("wamp.session.list")):
            if session_id == own or session_id in self.backend or session_id in self.anonymous:
                continue
            try:
                details = yield self.session.call("wamp.session.get", session_id)
            except ApplicationError:
                continue  # it left between the list and the get
            if details and session_id not in self._listing:
                self._remember(details)
        self._listing = None
        yield self._refresh_analyzers()

    def sessions(self):
        """nerve.mesh.sessions: the backend sessions, the anonymous count and the analyzer instances."""
        return {"sessions": sorted(self.backend.values(), key=lambda record: record["session"]),
                "anonymous": len(self.anonymous), "analyzers": list(self.analyzers)}

    def _remember(self, details):
        """Record a joined session; the event to publish about it, or None if it was known already."""
        if not isinstance(details, dict) or not isinstance(details.get("session"), int):
            return None
        session_id = details["session"]
        if session_id == self.session.session_id or session_id in self.backend or session_id in self.anonymous:
            return None
        if is_anonymous(details):
            self.anonymous.add(session_id)
            return {"anonymous": len(self.anonymous)}
        record = public_record(details)
        self.backend[session_id] = record
        return dict(record)

    def _on_join(self, details):
        event = self._remember(details)
        if event is not None:
            self.session.publish(JOINED_TOPIC, event)

    def _on_leave(self, session_id, *rest):
        if self._listing is not None:
            self._listing.add(session_id)
        if session_id in self.anonymous:
            self.anonymous.discard(session_id)
            reactor.callLater(0, leaves.pop, session_id, None)
            self.session.publish(LEFT_TOPIC, {"anonymous": len(self.anonymous)})
            return
        record = self.backend.pop(session_id, None)
        if record is None:
            leaves.pop(session_id, None)
            return
        # After a GOODBYE Crossbar publishes the meta event before it calls onLeave: read the reason a turn later.
        reactor.callLater(0, self._announce_left, record)
        if any(analyzer["session"] == session_id for analyzer in self.analyzers):
            self._set_analyzers([analyzer for analyzer in self.analyzers if analyzer["session"] != session_id])

    def _announce_left(self, record):
        self.session.publish(LEFT_TOPIC, dict(record, goodbye=leaves.pop(record["session"], False)))

    def _on_registration_change(self, *args):
        # Registrations change rarely (a component starting or stopping): re-read nerve.analyze's callees, once per
        # burst (an analyzer leaving fires an unregister per procedure), one reading at a time.
        self._stale = True
        if not self._refreshing:
            self._refreshing = True
            reactor.callLater(0.02, self._refresh_while_stale)

    @inlineCallbacks
    def _refresh_while_stale(self):
        try:
            while self._stale:
                self._stale = False
                try:
                    yield self._refresh_analyzers()
                except Exception as error:  # a meta call failing must not stop the service
                    self.log.warn("nerve.mesh: could not read the analyzers: {error}", error=error)
        finally:
            self._refreshing = False

    @inlineCallbacks
    def _refresh_analyzers(self):
        registration = yield self.session.call("wamp.registration.lookup", ANALYZE_URI, {"match": "exact"})
        ids = []
        if registration is not None:
            try:
                ids = yield self.session.call("wamp.registration.list_callees", registration)
            except ApplicationError:
                ids = []  # the registration went away meanwhile
        # A callee is a backend session (only the analyzer role may register nerve.analyze).
        self._set_analyzers([{"session": session_id, "authid": self.backend[session_id]["authid"]}
                             for session_id in ids if session_id in self.backend])

    def _set_analyzers(self, analyzers):
        analyzers = sorted(analyzers, key=lambda analyzer: (analyzer["authid"], analyzer["session"]))
        if analyzers != self.analyzers:
            self.analyzers = analyzers
            self.session.publish(ANALYZERS_TOPIC, {"analyzers": list(analyzers)})
