"""Router-side tuning, applied when the router worker imports the project's router code.

Each setting is on by default; the router config's component extra `"tuning"` can turn one off
(`{"tcp_nodelay": false}`), so a bench can measure what it is worth in one run.
"""

import pprint
from types import MappingProxyType

from crossbar.router import router as crossbar_router
from crossbar.router.protocol import WampRawSocketServerProtocol

from components.errors import ConfigError

DEFAULT_SETTINGS = MappingProxyType({"tcp_nodelay": True, "lazy_debug_format": True})
settings = dict(DEFAULT_SETTINGS)

_original_connection_made = WampRawSocketServerProtocol.connectionMade


def _connection_made_without_nagle(self):
    # Crossbar sets TCP_NODELAY for WebSocket but not RawSocket; with Nagle on, every large
    # message's last segment waits for a delayed ACK (~40 ms per hop on loopback).
    set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
    if set_no_delay is not None and settings["tcp_nodelay"]:
        set_no_delay(True)
    return _original_connection_made(self)


class LazyPrettyText:
    """pprint.pformat(value), computed only when a log line is actually written."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __str__(self):
        return pprint.pformat(self.value)

    __repr__ = __str__

    def __format__(self, spec):
        return format(str(self), spec)


def configure(overrides=None):
    """Apply the defaults with the given overrides (the component extra's "tuning"); idempotent.

    crossbar.router.router pretty-prints every authorization it looks up as an argument of a
    log.debug call, so the work is done even when debug is off: about 14 % of the router worker's
    CPU under load (py-spy); lazy_debug_format makes it happen only when a line is written.
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(DEFAULT_SETTINGS))
    if unknown:
        raise ConfigError(f"unknown router tuning {', '.join(unknown)}; known: {', '.join(DEFAULT_SETTINGS)}")
    settings.update(DEFAULT_SETTINGS, **overrides)
    WampRawSocketServerProtocol.connectionMade = _connection_made_without_nagle
    crossbar_router.pformat = LazyPrettyText if settings["lazy_debug_format"] else pprint.pformat
