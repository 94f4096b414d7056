"""Router-side transport tuning, applied when the router worker imports the project's router code."""

from crossbar.router.protocol import WampRawSocketServerProtocol

_original_connection_made = WampRawSocketServerProtocol.connectionMade
settings = {"tcp_nodelay": True}  # the router config's component extra can turn it off, to measure the difference


def _connection_made_without_nagle(self):
    # Crossbar sets TCP_NODELAY for WebSocket but not RawSocket; with Nagle on, every large
    # message's last segment waits for a delayed ACK (~40 ms per hop on loopback).
    set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
    if set_no_delay is not None and settings["tcp_nodelay"]:
        set_no_delay(True)
    return _original_connection_made(self)


def disable_nagle_for_rawsocket():
    """Make the router's RawSocket connections send at once (idempotent)."""
    if WampRawSocketServerProtocol.connectionMade is not _connection_made_without_nagle:
        WampRawSocketServerProtocol.connectionMade = _connection_made_without_nagle
