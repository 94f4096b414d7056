"""MessagePack forms of a call: a whole batch as one binary value, and states sealed as one value each."""

import msgpack

from components.mesh.errors import InvalidArgument
from components.monitor.analysis.checks import bad


def pack_batch(items):
    """A list of host entries or results as one MessagePack binary value, which a router forwards as one value."""
    return msgpack.packb(items, use_bin_type=True)


def pack_results(results):
    """Results packed for the wire with each state sealed (one binary value the caller stores and returns undecoded)."""
    return pack_batch([dict(result, state=msgpack.packb(result["state"], use_bin_type=True)) for result in results])


def _unpack(data, path, problem, host_id=None):
    """The one MessagePack value in data; InvalidArgument "path: problem (why)" if data is not one."""
    try:
        return msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.UnpackException) as error:
        raise bad(path, f"{problem} ({error})", host_id) from None


def unseal(state, path="state", host_id=None):
    """A sealed state's dict (checked by the caller); InvalidArgument naming `path` if the bytes are not one value."""
    return _unpack(state, path, "a sealed state must be one MessagePack value", host_id)


def unpack_batch(data, path="hosts"):
    """The list a pack_batch value holds; InvalidArgument naming `path` if the bytes are not one MessagePack array."""
    items = _unpack(data, path, "packed bytes are not one MessagePack value")
    if not isinstance(items, list):
        raise InvalidArgument(f"{path}: packed bytes must hold a list, got {type(items).__name__}")
    return items
