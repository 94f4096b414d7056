"""RawSocket receiving with a large message's reads joined once: same messages out, no copy per read, few reads."""

import random
import struct

import pytest
import pytest_twisted
from autobahn.exception import PayloadExceededError
from autobahn.twisted.rawsocket import WampRawSocketProtocol
from twisted.internet import defer
from twisted.internet.abstract import FileDescriptor

from components.mesh import rawsocket as framing


class Receiver(WampRawSocketProtocol):
    """The framing layer alone: what stringReceived gets, nothing parsed further."""

    MAX_LENGTH = 2**24

    def __init__(self):
        super().__init__()
        self.messages = []

    def stringReceived(self, payload):
        self.messages.append(payload)


class Connection(FileDescriptor):
    """A transport with Twisted's read and write sizes, and nothing under it."""

    def __init__(self):
        super().__init__(reactor=object())


def connected_receiver():
    receiver = Receiver()
    receiver.transport = Connection()
    return receiver


@pytest.fixture(autouse=True)
def framing_as_it_was():
    """Each test sets the process-wide receive path it needs; the next test finds it as it was."""
    installed, at_once = WampRawSocketProtocol.dataReceived, framing._reading_at_once
    yield
    WampRawSocketProtocol.dataReceived = installed
    framing.read_large_messages_at_once(at_once)


@pytest.fixture(params=[(True, True), (True, False), (False, False)], ids=["read at once", "joined once", "twisted"])
def joining(request):
    joined, at_once = request.param
    framing.join_reads_once(joined)
    framing.read_large_messages_at_once(at_once)
    return joined


def frame(payload):
    return struct.pack("!I", len(payload)) + payload


SMALL = [b"", b"a", b"bc" * 5, bytes(range(256)) * 20]
LARGE = [bytes([k % 251]) * size for k, size in
         enumerate([0, 10, 2**20, 1, framing.ACCUMULATE_ABOVE + 1, framing.ACCUMULATE_ABOVE - 4, 300_000, 2])]


@pytest.mark.parametrize("messages, largest_read", [(SMALL, 1), (SMALL, 7), (LARGE, 4096), (LARGE, 65536), (LARGE, 2**22)],
                         ids=["small, 1 byte", "small, up to 7", "large, up to 4 KB", "large, up to 64 KB", "large, up to 4 MB"])
def test_every_message_comes_out_whole_and_in_order_however_the_stream_is_cut(joining, messages, largest_read):
    stream = b"".join(map(frame, messages))
    receiver, rng, position = connected_receiver(), random.Random(largest_read), 0
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


@pytest.fixture
def reading_at_once():
    framing.join_reads_once()
    framing.read_large_messages_at_once(True)


def test_the_rest_of_a_large_message_is_read_in_one_go_then_reads_are_twisteds_again(reading_at_once):
    payload = b"x" * (3 * framing.AT_ONCE_LIMIT // 2)
    data = frame(payload) + frame(b"next")
    receiver = connected_receiver()
    receiver.dataReceived(data[:1000])
    # The next read may take everything the message still misses, up to the limit.
    assert receiver.transport.bufferSize == framing.AT_ONCE_LIMIT
    receiver.dataReceived(data[1000:framing.AT_ONCE_LIMIT])
    assert receiver.transport.bufferSize == len(frame(payload)) - framing.AT_ONCE_LIMIT
    receiver.dataReceived(data[framing.AT_ONCE_LIMIT:])
    assert receiver.messages == [payload, b"next"]
    assert receiver.transport.bufferSize == FileDescriptor.bufferSize == 2**16


def test_a_large_messages_last_bytes_are_read_with_at_least_twisteds_size(reading_at_once):
    payload = b"y" * 2**20
    receiver = connected_receiver()
    receiver.dataReceived(frame(payload)[:-10])
    assert receiver.transport.bufferSize == FileDescriptor.bufferSize  # not a 10-byte read
    receiver.dataReceived(frame(payload)[-10:])
    assert receiver.messages == [payload]


def test_small_messages_keep_twisteds_read_size(reading_at_once):
    receiver = connected_receiver()
    receiver.dataReceived(b"".join(map(frame, SMALL)))
    assert receiver.messages == SMALL and "bufferSize" not in vars(receiver.transport)


def test_switched_off_a_large_message_is_read_in_twisteds_pieces(reading_at_once):
    framing.read_large_messages_at_once(False)
    receiver = connected_receiver()
    receiver.dataReceived(frame(b"z" * 2**20)[:100])
    assert receiver._gathered_reads and "bufferSize" not in vars(receiver.transport)


def test_switched_off_mid_message_the_connection_still_returns_to_twisteds_reads(reading_at_once):
    receiver = connected_receiver()
    receiver.dataReceived(frame(b"z" * 2**20)[:100])
    framing.read_large_messages_at_once(False)
    receiver.dataReceived(frame(b"z" * 2**20)[100:])
    assert receiver.messages == [b"z" * 2**20] and "bufferSize" not in vars(receiver.transport)


def test_a_connection_may_hand_the_kernel_a_large_message_in_one_write():
    connection = Connection()
    assert connection.SEND_LIMIT == 128 * 1024
    framing.write_large_messages_at_once(connection)
    assert connection.SEND_LIMIT == framing.AT_ONCE_LIMIT
    assert FileDescriptor.SEND_LIMIT == 128 * 1024  # other connections keep Twisted's
    framing.write_large_messages_at_once(None)  # no TCP connection under the session (e.g. TLS): nothing to widen


class CountingReceiver(Receiver):
    """The framing layer on a real TCP connection, counting the reads a message takes (no WAMP handshake)."""

    def __init__(self, done):
        super().__init__()
        self.done, self.reads = done, 0

    def connectionMade(self):
        pass

    def connectionLost(self, reason=None):
        pass

    def dataReceived(self, data):
        self.reads += 1
        super().dataReceived(data)

    def stringReceived(self, payload):
        super().stringReceived(payload)
        self.done.callback(self)


@defer.inlineCallbacks
def reads_of_a_message_over_tcp(size):
    """How many reads a receiver on loopback TCP takes for one message of `size` bytes, its sender writing at once."""
    from twisted.internet import protocol, reactor

    done = defer.Deferred()
    port = reactor.listenTCP(0, protocol.Factory.forProtocol(lambda: CountingReceiver(done)), interface="127.0.0.1")

    class Sender(protocol.Protocol):
        def connectionMade(self):
            framing.write_large_messages_at_once(self.transport)
            self.transport.write(frame(b"m" * size))

    client = yield protocol.ClientCreator(reactor, Sender).connectTCP("127.0.0.1", port.getHost().port)
    receiver = yield done
    client.transport.loseConnection()
    yield port.stopListening()
    assert receiver.messages == [b"m" * size]
    return receiver.reads


@pytest_twisted.inlineCallbacks
def test_over_real_tcp_a_large_message_takes_a_few_reads_instead_of_one_per_64_kib(reading_at_once):
    size = 6 * 2**20
    at_once = yield reads_of_a_message_over_tcp(size)
    framing.read_large_messages_at_once(False)
    twisteds = yield reads_of_a_message_over_tcp(size)
    assert twisteds >= size // FileDescriptor.bufferSize  # Twisted reads 64 KiB at most
    assert at_once <= twisteds // 4, f"{at_once} reads at once, {twisteds} Twisted's way"  # 8-9 vs 97 here


class TcpConnection(Connection):
    """A transport that records TCP_NODELAY as a TCP connection would set it."""

    no_delay = False

    def setTcpNoDelay(self, enabled):
        self.no_delay = enabled


@pytest.mark.parametrize("no_delay, large_writes", [(True, True), (True, False), (False, True), (False, False)])
def test_a_connection_is_tuned_as_asked_on_either_side(no_delay, large_writes):
    connection = TcpConnection()
    framing.tune_connection(connection, no_delay, large_writes)
    assert connection.no_delay is no_delay
    assert connection.SEND_LIMIT == (framing.AT_ONCE_LIMIT if large_writes else 128 * 1024)
    framing.tune_connection(None)  # a session without a TCP connection under it is left alone
