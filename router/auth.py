"""Router-embedded authenticator: checks backend tickets derived from the role secrets."""

from autobahn.twisted.wamp import ApplicationSession
from autobahn.wamp.exception import ApplicationError
from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger

from components import credentials
from components.errors import NotAuthenticated

AUTHENTICATE_URI = "nerve.auth.authenticate"


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
        count = self.failures[authid] = self.failures.get(authid, 0) + 1
        if count in (1, 10, 100) or count % 1000 == 0:
            self.log.warn("authentication refused ({count} times): {message}", count=count, message=message)
        raise ApplicationError(NotAuthenticated.uri, message)


class AuthSession(ApplicationSession):
    """The router-side session that registers the authenticator procedure."""

    @inlineCallbacks
    def onJoin(self, details):
        """Load (or create) the secrets and register the authenticator."""
        path = credentials.secrets_path(self.config.extra.get("secrets_file") if self.config.extra else None)
        authenticator = Authenticator(credentials.load_or_create(path))
        yield self.register(authenticator.authenticate, AUTHENTICATE_URI)
