"""Router-side tuning, applied when the router's own session (router/auth.py) joins.

Each setting is on by default; the router config's component extra `"tuning"` can turn one off
(`{"tcp_nodelay": false}`), so a bench can measure what it is worth in one run. What each one
patches, what it saves and the upstream change that would retire it: docs/deviations.md.
"""

import functools
import importlib
from types import MappingProxyType

from crossbar.router.protocol import WampRawSocketServerProtocol

from components.mesh.tuning import apply_process_tuning, checked_settings, tune_transport
from router import mesh_view, metering
from router.guards import GUARD_DEFAULTS

# The guards (router/guards.py, installed next to the tuning) are switched by name the same way.
DEFAULT_SETTINGS = MappingProxyType({"tcp_nodelay": True, "lazy_debug_format": True, "freeze_startup_heap": True,
                                     "join_reads_once": True, "large_messages_at_once": True, "metering": True,
                                     "leave_reasons": True, **GUARD_DEFAULTS})
settings = dict(DEFAULT_SETTINGS)

_original_connection_made = WampRawSocketServerProtocol.connectionMade


def _connection_made_tuned(self):
    # Crossbar sets TCP_NODELAY for WebSocket but not RawSocket (tune_connection says why it matters).
    tune_transport(self.transport, settings)
    return _original_connection_made(self)


class LazyText(functools.partial):
    """A call whose result becomes text only when a log line is actually written.

    A partial, so that making one is a C-level call: the router makes about ten per message.
    """

    __slots__ = ()

    def __str__(self):
        return str(self())

    __repr__ = __str__

    def __format__(self, spec):
        return format(str(self), spec)


def deferred(function):
    """function, but returning a LazyText of its result (for arguments that only ever go into log lines)."""
    defer_formatting = functools.partial(LazyText, function)
    defer_formatting.eager = function
    return defer_formatting


# The crossbar modules on the message path whose pretty-printing and highlighting helpers are only
# ever called as log arguments (tests/test_router.py checks that against the installed crossbar).
LAZY_LOG_HELPERS = {
    "crossbar.router.router": ("pformat", "hlid", "hltype", "hlval"),
    "crossbar.router.broker": ("hlflag", "hlid", "hltype"),
    "crossbar.router.dealer": ("hlflag", "hlid", "hltype"),
    "crossbar.router.session": ("hl", "hlid", "hltype", "hlval"),
    "crossbar.router.protocol": ("hlid", "hltype", "hlval"),
    "crossbar.router.role": ("hltype", "hlval"),
}


def _set_lazy_log_helpers(lazy):
    for module_name, names in LAZY_LOG_HELPERS.items():
        module = importlib.import_module(module_name)
        for name in names:
            helper = getattr(module, name)
            eager = getattr(helper, "eager", helper)
            setattr(module, name, deferred(eager) if lazy else eager)


def configure(overrides=None):
    """Apply the defaults with the given overrides (the component extra's "tuning"); idempotent.

    Crossbar's router pretty-prints every authorization it looks up and colours every URI, id and
    function name of its per-message log.debug calls, so the work is done even when debug is off;
    lazy_debug_format makes it happen only when a line is written.
    """
    settings.update(checked_settings(overrides, DEFAULT_SETTINGS, "router tuning"))
    WampRawSocketServerProtocol.connectionMade = _connection_made_tuned
    _set_lazy_log_helpers(settings["lazy_debug_format"])
    # The router keeps CPython's young-generation threshold: a larger one lengthened its collections.
    apply_process_tuning({name: settings[name] for name in ("join_reads_once", "large_messages_at_once",
                                                            "freeze_startup_heap")})
    metering.count_messages(settings["metering"])
    mesh_view.record_leaves(settings["leave_reasons"])


def restore():
    """Put back every Crossbar, Autobahn and collector behaviour configure changed (for tests and embedding)."""
    settings.update(DEFAULT_SETTINGS)
    WampRawSocketServerProtocol.connectionMade = _original_connection_made
    _set_lazy_log_helpers(False)
    apply_process_tuning({"join_reads_once": False, "large_messages_at_once": False, "freeze_startup_heap": False})
    metering.count_messages(False)
    mesh_view.record_leaves(False)
