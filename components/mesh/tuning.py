"""The process-wide tuning nerve applies to the libraries it runs on, each part switchable (docs/deviations.md).

The same names serve components (`NERVE_TUNING=tcp_nodelay=off,...` or the hidden `--tuning`
option) and the router (its component extra `"tuning": {"tcp_nodelay": false}`, router/tuning.py),
so a bench can measure what each part is worth in one run.
"""

from types import MappingProxyType

from components.mesh import collector
from components.mesh.errors import ConfigError

# Every setting is on by default; what each patches and why is in docs/deviations.md.
COMPONENT_DEFAULTS = MappingProxyType({
    "tcp_nodelay": True,  # TCP_NODELAY on RawSocket connections (Autobahn leaves Nagle's algorithm on)
    "join_reads_once": True,  # a large RawSocket message's reads joined once, not copied per read
    "large_messages_at_once": True,  # a large message read and written in one go, not 64/128 KiB a turn
    "freeze_startup_heap": True,  # start-up objects kept out of garbage collections (gc.freeze)
    "young_collections": True,  # the youngest generation collected after 10,000 new objects, not 700
    "fail_calls_on_leave": True,  # calls in flight fail when the router connection is lost (else they never fire)
})
# The library versions every patch of the tuning was verified against (tests/test_deviations.py fails on others).
VERIFIED_VERSIONS = MappingProxyType({"autobahn": "26.10.2", "crossbar": "26.10.1", "twisted": "26.10.0"})
_WORDS = {"on": True, "true": True, "1": True, "off": False, "false": False, "0": False}


def checked_settings(overrides, defaults, where):
    """defaults with overrides applied; an unknown name or a value that is not a bool is a ConfigError naming where."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ConfigError(f"{where}: unknown tuning {', '.join(unknown)}; known: {', '.join(defaults)}")
    for name, value in overrides.items():
        if type(value) is not bool:
            raise ConfigError(f"{where}: tuning {name} must be true or false, got {value!r}")
    return MappingProxyType(dict(defaults, **overrides))


def parse_tuning(text, where="NERVE_TUNING"):
    """The component settings from text like 'tcp_nodelay=off,large_messages_at_once=on' (empty: the defaults)."""
    overrides = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        name, _, word = item.partition("=")
        if word.lower() not in _WORDS:
            raise ConfigError(f"{where}: expected NAME=on|off, got {item!r}")
        overrides[name.strip()] = _WORDS[word.lower()]
    return checked_settings(overrides, COMPONENT_DEFAULTS, where)


def apply_process_tuning(settings):
    """Install the process-wide parts of the settings in this process (idempotent; each part undone when off)."""
    from components.mesh import rawsocket  # imports Autobahn, which a tracker loads only after trimming it

    rawsocket.join_reads_once(settings["join_reads_once"])
    rawsocket.read_large_messages_at_once(settings["large_messages_at_once"])
    if settings["freeze_startup_heap"]:
        collector.freeze_startup_heap()
    else:
        collector.unfreeze_heap()
    if "young_collections" in settings:
        young = collector.YOUNG_THRESHOLD if settings["young_collections"] else collector.CPYTHON_YOUNG_THRESHOLD
        collector.set_young_threshold(young)


def tune_transport(transport, settings):
    """Set up one connection's Twisted transport as the settings say (TCP_NODELAY, large writes)."""
    from components.mesh import rawsocket

    rawsocket.tune_connection(transport, settings["tcp_nodelay"], settings["large_messages_at_once"])
