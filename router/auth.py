"""Router-embedded authenticator: checks backend tickets derived from the role secrets."""

from autobahn.twisted.wamp import ApplicationSession
from autobahn.wamp.exception import ApplicationError
from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger

from components.mesh import credentials
from components.mesh.errors import NotAuthenticated
from router import guards, tuning
from router.limits import keep_recursion_limit
from router.mesh_view import MeshView
from router.metering import STATS_URI, router_stats

# The worker imports this module once its dependencies are loaded: from here on nothing raises the limit again.
keep_recursion_limit()

AUTHENTICATE_URI = "nerve.auth.authenticate"
AUTHORIZE_URI = "nerve.auth.authorize"
MEASURE_PREFIX = "nerve.measure."
# What every tracker may do whatever its authid: safe for Crossbar's cache, whose key has no authid.
TRACKER_ROLE_WIDE = {("wamp.subscription.lookup", "call"), ("wamp.subscription.count_subscribers", "call")}
MAX_TRACKED_FAILURES = 10000


class Authenticator:
    """Decides who may join: backend roles by ticket, counting repeated failures per authid."""

    log = Logger()

    def __init__(self, role_secrets):
        self.role_secrets = role_secrets
        self.failures = {}

    def authenticate(self, realm, authid, details):
        """Return the principal for a valid ticket, or raise an error naming the authid.

        The role is the one named in authextra (nerve's components send it), else the role whose secret the
        ticket was derived from: Crossbar does not pass HELLO's authrole on, so a client that follows the
        standard (a browser signing in with authid + ticket) is served by its credential alone."""
        role = (details.get("authextra") or {}).get("role")
        if not authid:
            self._refuse(authid, f"no authid given for role '{role}'")
        if role is None:
            role = self._role_of_ticket(authid, details.get("ticket", ""))
            if role is None:
                self._refuse(authid, f"authid '{authid}' presented a ticket of no role: "
                                     f"use `nerve credential ROLE {authid}` on the router's machine")
        if role not in self.role_secrets:
            self._refuse(authid, f"authid '{authid}' asked for unknown role {role!r}; backend roles are {sorted(self.role_secrets)}")
        if not credentials.ticket_matches(self.role_secrets[role], authid, details.get("ticket", "")):
            self._refuse(authid, f"authid '{authid}' presented a wrong ticket for role '{role}': "
                                 f"use the secrets file the router uses or `nerve credential {role} {authid}`")
        self.failures.pop(authid, None)
        return {"role": role, "authid": authid}

    def _role_of_ticket(self, authid, ticket):
        # Every role is tried (constant-time compares), so the time taken does not tell which role matched.
        matches = [role for role, secret in sorted(self.role_secrets.items())
                   if credentials.ticket_matches(secret, str(authid), ticket)]
        return matches[0] if matches else None

    def _refuse(self, authid, message):
        if len(self.failures) > MAX_TRACKED_FAILURES:
            self.failures.clear()  # a flood of made-up authids must not grow memory without bound
        key = guards.clip(authid, guards.LOGGED_AUTHID_LIMIT)  # a 1 MB authid is neither kept nor logged whole
        count = self.failures[key] = self.failures.get(key, 0) + 1
        if count in (1, 10, 100) or count % 1000 == 0:
            # One line, the authid cut short, at most guards.PEER_LOG_LINES per window for all authids together.
            guards.REFUSALS.warn(self.log, "authentication refused ({count} times): {message}", count=count,
                                 message=guards.clip_authid(message, authid))
        raise ApplicationError(NotAuthenticated.uri, message)


def authorize_tracker(session, uri, action, options=None):
    """A tracker may publish only on its own host's topic, nerve.measure.<authid>."""
    if action == "publish" and uri == MEASURE_PREFIX + str(session.get("authid")):
        # Never cached: Crossbar's cache key has no authid, so a cached yes would let another tracker in.
        return {"allow": True, "disclose": False, "cache": False}
    if (uri, action) in TRACKER_ROLE_WIDE:
        return {"allow": True, "disclose": False, "cache": True}
    return False


class AuthSession(ApplicationSession):
    """The router-side session that registers the authenticator, the tracker authorizer, the router's stats and the
    dashboard's view of the mesh (router/mesh_view.py)."""

    @inlineCallbacks
    def onJoin(self, details):
        """Load (or create) the secrets and register the authenticator."""
        extra = self.config.extra or {}
        keep_recursion_limit()
        tuning.configure(extra.get("tuning"))
        guards.install(tuning.settings)
        path = credentials.secrets_path(extra.get("secrets_file"))
        authenticator = Authenticator(credentials.load_or_create(path))
        yield self.register(authenticator.authenticate, AUTHENTICATE_URI)
        yield self.register(authorize_tracker, AUTHORIZE_URI)
        yield self.register(router_stats, STATS_URI)
        try:
            # The dashboard's filtered view of the sessions; the authenticator above works even if it fails.
            yield MeshView(self).start()
        except Exception as error:
            Authenticator.log.error("nerve.mesh.sessions is unavailable: {error}", error=error)
