"""Router-embedded authenticator: checks backend tickets derived from the role secrets."""

from autobahn.twisted.wamp import ApplicationSession
from autobahn.wamp.exception import ApplicationError
from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger

from components.mesh import credentials
from components.mesh.errors import NotAuthenticated
from router import tuning
from router.limits import keep_recursion_limit
from router.metering import STATS_URI, router_stats

# The worker imports this module once its dependencies are loaded: from here on nothing raises the limit again.
keep_recursion_limit()

AUTHENTICATE_URI = "nerve.auth.authenticate"
AUTHORIZE_URI = "nerve.auth.authorize"
MEASURE_PREFIX = "nerve.measure."
# What every tracker may do whatever its authid: safe for Crossbar's authid-blind cache (trap 6).
TRACKER_ROLE_WIDE = {("wamp.subscription.lookup", "call"), ("wamp.subscription.count_subscribers", "call")}
MAX_TRACKED_FAILURES = 10000


class Authenticator:
    """Decides who may join: backend roles by ticket, counting repeated failures per authid."""

    log = Logger()

    def __init__(self, role_secrets):
        self.role_secrets = role_secrets
        self.failures = {}

    def authenticate(self, realm, authid, details):
        """Return the principal for a valid ticket, or raise an error naming the authid."""
        role = (details.get("authextra") or {}).get("role")
        if role not in self.role_secrets:
            self._refuse(authid, f"authid '{authid}' asked for unknown role {role!r}; backend roles are {sorted(self.role_secrets)}")
        if not authid:
            self._refuse(authid, f"no authid given for role '{role}'")
        if not credentials.ticket_matches(self.role_secrets[role], authid, details.get("ticket", "")):
            self._refuse(authid, f"authid '{authid}' presented a wrong ticket for role '{role}': "
                                 f"use the secrets file the router uses or `nerve credential {role} {authid}`")
        self.failures.pop(authid, None)
        return {"role": role, "authid": authid}

    def _refuse(self, authid, message):
        if len(self.failures) > MAX_TRACKED_FAILURES:
            self.failures.clear()  # a flood of made-up authids must not grow memory without bound
        count = self.failures[authid] = self.failures.get(authid, 0) + 1
        if count in (1, 10, 100) or count % 1000 == 0:
            self.log.warn("authentication refused ({count} times): {message}", count=count, message=message)
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
    """The router-side session that registers the authenticator, the tracker authorizer and the router's stats."""

    @inlineCallbacks
    def onJoin(self, details):
        """Load (or create) the secrets and register the authenticator."""
        extra = self.config.extra or {}
        keep_recursion_limit()
        tuning.configure(extra.get("tuning"))
        path = credentials.secrets_path(extra.get("secrets_file"))
        authenticator = Authenticator(credentials.load_or_create(path))
        yield self.register(authenticator.authenticate, AUTHENTICATE_URI)
        yield self.register(authorize_tracker, AUTHORIZE_URI)
        yield self.register(router_stats, STATS_URI)
