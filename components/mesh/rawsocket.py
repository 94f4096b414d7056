"""RawSocket receiving without copying a large message once per read, and moving it in few reads and writes.

Twisted's length-prefixed receiver appends every read to the bytes received so far, so a message
that arrives in N reads is copied N times: ~30 ms of CPU for a 5 MB `nerve.analyze` call read in
64 KB pieces, ~90 ms in 16 KB pieces, paid by the router, the analyzer and the orchestrator alike,
and more the busier a process is (it then reads smaller pieces). Installed, the reads of a message
still incomplete and larger than ACCUMULATE_ABOVE are kept as a list and joined once, when the
whole message is there; everything else takes Twisted's own path, which still does the parsing.

Twisted also reads at most 64 KiB and writes at most 128 KiB per reactor turn and connection. A
turn of a router or orchestrator under load takes milliseconds (it handles thousands of small
events), so a 5 MB call waited ~40 turns to leave its sender and ~80 to be read: the router took
250-375 ms to read one. With `read_large_messages_at_once` the rest of a large message is read in
one go (up to AT_ONCE_LIMIT), and `write_large_messages_at_once(transport)` lets one write hand the
kernel as much; small messages keep Twisted's sizes, so no turn reads more of them than before.
"""

from struct import unpack

from autobahn.twisted.rawsocket import WampRawSocketProtocol
from twisted.internet.abstract import FileDescriptor

# A message missing fewer bytes than this is joined Twisted's way: copying a small buffer costs less than a list.
ACCUMULATE_ABOVE = 2**16
# The most one read of a large message's rest, or one write, takes (the kernel's socket buffers cap both anyway).
AT_ONCE_LIMIT = 2**22

_twisted_data_received = WampRawSocketProtocol.dataReceived
_reading_at_once = False


def _data_received_joining_once(self, data):
    """Twisted's dataReceived, but reads of a large incomplete message are gathered and joined once."""
    gathered = self.__dict__.get("_gathered_reads")
    if gathered is not None:
        gathered.append(data)
        self._gathered_bytes += len(data)
        if self._gathered_bytes < self._gathered_needed:
            _size_next_read(self.transport, self._gathered_needed - self._gathered_bytes)
            return
        data = b"".join(gathered)  # begins with what Twisted had buffered, the length prefix included
        self._gathered_reads = None
        self._unprocessed = b""
        _size_next_read(self.transport, None)
    _twisted_data_received(self, data)
    buffered = self._unprocessed
    if self.paused or len(buffered) < self.prefixLength:
        return
    (length,) = unpack(self.structFormat, buffered[:self.prefixLength])
    needed = self.prefixLength + length
    # Over the limit, Twisted has already called lengthLimitExceeded; nothing is worth gathering.
    if length <= self.MAX_LENGTH and needed - len(buffered) > ACCUMULATE_ABOVE:
        self._gathered_reads, self._gathered_bytes, self._gathered_needed = [buffered], len(buffered), needed
        _size_next_read(self.transport, needed - len(buffered))


def _size_next_read(transport, missing):
    """The transport's next read: the rest of a large message (missing bytes, up to AT_ONCE_LIMIT), or Twisted's size."""
    if not isinstance(transport, FileDescriptor):
        return
    if missing is None:
        transport.__dict__.pop("bufferSize", None)  # back to the class's 64 KiB, even if switched off meanwhile
    elif _reading_at_once:
        transport.bufferSize = min(max(missing, FileDescriptor.bufferSize), AT_ONCE_LIMIT)


def join_reads_once(enabled=True):
    """Make every WAMP RawSocket connection of this process (client or router side) gather large messages' reads."""
    WampRawSocketProtocol.dataReceived = _data_received_joining_once if enabled else _twisted_data_received


def read_large_messages_at_once(enabled=True):
    """While a large message arrives, read the rest of it in one go instead of 64 KiB a turn (needs join_reads_once)."""
    global _reading_at_once
    _reading_at_once = enabled


def write_large_messages_at_once(transport):
    """Let one write of this connection hand the kernel up to AT_ONCE_LIMIT instead of Twisted's 128 KiB."""
    if isinstance(transport, FileDescriptor):
        transport.SEND_LIMIT = AT_ONCE_LIMIT


def tune_connection(transport, no_delay=True, large_writes=True):
    """Set up one WAMP connection's transport, on either side: TCP_NODELAY and large writes at once, as asked.

    Autobahn's and Crossbar's RawSocket leave Nagle's algorithm on, so every large message's last
    segment waited for a delayed ACK (~40 ms per hop on loopback). A transport that is not plain TCP
    (TLS over it, or none) is left as it is.
    """
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if no_delay and set_no_delay is not None:
        set_no_delay(True)
    if large_writes:
        write_large_messages_at_once(transport)
