"""RawSocket receiving with a large message's reads joined once: same messages out, no copy per read."""

import random
import struct

import pytest
from autobahn.exception import PayloadExceededError
from autobahn.twisted.rawsocket import WampRawSocketProtocol

from components import framing


class Receiver(WampRawSocketProtocol):
    """The framing layer alone: what stringReceived gets, nothing parsed further."""

    MAX_LENGTH = 2**24

    def __init__(self):
        super().__init__()
        self.messages = []

    def stringReceived(self, payload):
        self.messages.append(payload)


@pytest.fixture(autouse=True)
def framing_as_it_was():
    """Each test sets the process-wide receive path it needs; the next test finds it as it was."""
    installed = WampRawSocketProtocol.dataReceived
    yield
    WampRawSocketProtocol.dataReceived = installed


@pytest.fixture(params=[True, False], ids=["joined once", "twisted"])
def joining(request):
    framing.join_reads_once(request.param)
    return request.param


def frame(payload):
    return struct.pack("!I", len(payload)) + payload


SMALL = [b"", b"a", b"bc" * 5, bytes(range(256)) * 20]
LARGE = [bytes([k % 251]) * size for k, size in
         enumerate([0, 10, 2**20, 1, framing.ACCUMULATE_ABOVE + 1, framing.ACCUMULATE_ABOVE - 4, 300_000, 2])]


@pytest.mark.parametrize("messages, largest_read", [(SMALL, 1), (SMALL, 7), (LARGE, 4096), (LARGE, 65536), (LARGE, 2**22)],
                         ids=["small, 1 byte", "small, up to 7", "large, up to 4 KB", "large, up to 64 KB", "large, up to 4 MB"])
def test_every_message_comes_out_whole_and_in_order_however_the_stream_is_cut(joining, messages, largest_read):
    stream = b"".join(map(frame, messages))
    receiver, rng, position = Receiver(), random.Random(largest_read), 0
    while position < len(stream):
        size = rng.randint(1, largest_read)
        receiver.dataReceived(stream[position:position + size])
        position += size
    assert receiver.messages == messages


def test_the_reads_of_a_large_message_are_kept_apart_until_it_is_complete():
    framing.join_reads_once()
    payload = b"x" * 2**20
    data = frame(payload) + frame(b"next")
    receiver = Receiver()
    for start in range(0, 2**20, 4096):
        receiver.dataReceived(data[start:start + 4096])
        # Twisted's own buffer stays at the first read instead of growing (and being copied) with every read.
        assert len(receiver._unprocessed) == 4096 and receiver.messages == []
    receiver.dataReceived(data[2**20:])
    assert receiver.messages == [payload, b"next"]
    assert receiver._unprocessed == b""


def test_a_message_over_the_agreed_limit_is_refused_as_before(joining):
    receiver = Receiver()
    receiver.MAX_LENGTH = 1000
    with pytest.raises(PayloadExceededError, match="exceeded"):
        receiver.dataReceived(struct.pack("!I", 5000) + b"x" * 100)
