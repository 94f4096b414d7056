"""RawSocket receiving without copying a large message once per read.

Twisted's length-prefixed receiver appends every read to the bytes received so far, so a message
that arrives in N reads is copied N times: ~30 ms of CPU for a 5 MB `nerve.analyze` call read in
64 KB pieces, ~90 ms in 16 KB pieces, paid by the router, the analyzer and the orchestrator alike,
and more the busier a process is (it then reads smaller pieces). Installed, the reads of a message
still incomplete and larger than ACCUMULATE_ABOVE are kept as a list and joined once, when the
whole message is there; everything else takes Twisted's own path, which still does the parsing.
"""

from struct import unpack

from autobahn.twisted.rawsocket import WampRawSocketProtocol

# A message missing fewer bytes than this is joined Twisted's way: copying a small buffer costs less than a list.
ACCUMULATE_ABOVE = 2**16

_twisted_data_received = WampRawSocketProtocol.dataReceived


def _data_received_joining_once(self, data):
    """Twisted's dataReceived, but reads of a large incomplete message are gathered and joined once."""
    gathered = self.__dict__.get("_gathered_reads")
    if gathered is not None:
        gathered.append(data)
        self._gathered_bytes += len(data)
        if self._gathered_bytes < self._gathered_needed:
            return
        data = b"".join(gathered)  # begins with what Twisted had buffered, the length prefix included
        self._gathered_reads = None
        self._unprocessed = b""
    _twisted_data_received(self, data)
    buffered = self._unprocessed
    if self.paused or len(buffered) < self.prefixLength:
        return
    (length,) = unpack(self.structFormat, buffered[:self.prefixLength])
    needed = self.prefixLength + length
    # Over the limit, Twisted has already called lengthLimitExceeded; nothing is worth gathering.
    if length <= self.MAX_LENGTH and needed - len(buffered) > ACCUMULATE_ABOVE:
        self._gathered_reads, self._gathered_bytes, self._gathered_needed = [buffered], len(buffered), needed


def join_reads_once(enabled=True):
    """Make every WAMP RawSocket connection of this process (client or router side) gather large messages' reads."""
    WampRawSocketProtocol.dataReceived = _data_received_joining_once if enabled else _twisted_data_received
