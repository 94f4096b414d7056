"""One exception hierarchy for nerve; application errors carry a WAMP error URI."""


class NerveError(Exception):
    """Root of every error nerve raises on purpose."""

    uri = "nerve.error.internal"


class ConfigError(NerveError):
    """A flag, variable or file has a value nerve cannot use."""

    uri = "nerve.error.config"


class InvalidArgument(NerveError):
    """A call argument or event payload does not match its schema."""

    uri = "nerve.error.invalid_argument"


class NotFound(NerveError):
    """The thing asked for (a host, a problem) is not known."""

    uri = "nerve.error.not_found"


class Unavailable(NerveError):
    """A dependency of the call (an analyzer, the router) is not reachable now."""

    uri = "nerve.error.unavailable"


class NotAuthenticated(NerveError):
    """A backend component presented a missing or wrong credential."""

    uri = "nerve.error.not_authenticated"


class NotAuthorized(NerveError):
    """The caller's role may not do what it asked (e.g. an anonymous dashboard acknowledging an alert)."""

    uri = "nerve.error.not_authorized"


ERROR_URIS = {cls.uri: cls for cls in (NerveError, ConfigError, InvalidArgument, NotFound, Unavailable, NotAuthenticated,
                                       NotAuthorized)}
