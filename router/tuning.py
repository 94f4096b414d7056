"""Router-side tuning, applied when the router worker imports the project's router code.

Each setting is on by default; the router config's component extra `"tuning"` can turn one off
(`{"tcp_nodelay": false}`), so a bench can measure what it is worth in one run.
"""

import functools
import importlib
from types import MappingProxyType

import msgpack
from autobahn.twisted.rawsocket import WampRawSocketProtocol
from autobahn.wamp import message
from crossbar.router.protocol import WampRawSocketServerProtocol

from components.errors import ConfigError
from components.framing import frames_plain_msgpack, join_reads_once, read_large_messages_at_once, send_framed, tune_connection
from components.gc_pauses import freeze_startup_heap, unfreeze_heap

DEFAULT_SETTINGS = MappingProxyType({"tcp_nodelay": True, "lazy_debug_format": True, "freeze_startup_heap": True,
                                     "join_reads_once": True, "large_messages_at_once": True, "framed_acknowledgements": True})
settings = dict(DEFAULT_SETTINGS)

_original_connection_made = WampRawSocketServerProtocol.connectionMade


def _connection_made_tuned(self):
    # Crossbar sets TCP_NODELAY for WebSocket but not RawSocket (tune_connection says why it matters).
    tune_connection(self.transport, settings["tcp_nodelay"], settings["large_messages_at_once"])
    return _original_connection_made(self)


def _send_framing_acknowledgements(self, msg):
    """A RawSocket connection's send: a PUBLISHED over MessagePack packed here, anything else as Autobahn sends it.

    Every tracker's measurement is an acknowledged publish, so the router sends one PUBLISHED per
    host per second. Autobahn's send (a marshal, its serializer, its checks) took 14 µs of the
    router worker's CPU for that three-number list at 5,500 hosts, where packing it takes 1; the
    bytes are the same (tested).
    """
    if type(msg) is not message.Published or not frames_plain_msgpack(self) or not self.isOpen():
        return WampRawSocketProtocol.send(self, msg)
    send_framed(self, msgpack.packb([message.Published.MESSAGE_TYPE, msg.request, msg.publication]))
    return None


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
    function name of its per-message log.debug calls, so the work is done even when debug is off:
    about 14 % (pformat) and 10 % (highlighting) of the router worker's CPU under load (py-spy);
    lazy_debug_format makes it happen only when a line is written.
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(DEFAULT_SETTINGS))
    if unknown:
        raise ConfigError(f"unknown router tuning {', '.join(unknown)}; known: {', '.join(DEFAULT_SETTINGS)}")
    settings.update(DEFAULT_SETTINGS, **overrides)
    WampRawSocketServerProtocol.connectionMade = _connection_made_tuned
    _set_lazy_log_helpers(settings["lazy_debug_format"])
    # Crossbar's modules, classes and functions live as long as the worker; frozen, the full collections
    # that stop all routing no longer walk them (freeze_startup_heap).
    if settings["freeze_startup_heap"]:
        freeze_startup_heap()
    else:
        unfreeze_heap()
    # A 5 MB nerve.analyze call is otherwise copied once per read on its way through (join_reads_once).
    join_reads_once(settings["join_reads_once"])
    # The router read a 5 MB call in 250-375 ms at 5,000 hosts, 64 KiB a turn (large_messages_at_once).
    read_large_messages_at_once(settings["large_messages_at_once"])
    # A PUBLISHED for every measurement cost 19 µs of the router's CPU, 10 % of it at 5,500 hosts (framed_acknowledgements).
    WampRawSocketServerProtocol.send = (_send_framing_acknowledgements if settings["framed_acknowledgements"]
                                        else WampRawSocketProtocol.send)
