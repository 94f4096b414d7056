"""Hostile and broken peers for tests and benches, byte by byte (no WAMP library), and what they cost a router.

Used by tests/test_hardening.py and bench/abuse_bench.py; traffic goes to loopback addresses only.
"""

import base64
import os
import socket
import struct
import threading
import time

import psutil

from components.testing.live import wait_until

ATTACKER_SOURCE = "127.0.0.2"  # a second loopback address: the attacker is not the mesh's own 127.0.0.1


# --- Raw peers: what a hostile client sends, byte by byte --------------------------------------------------------

def attacker_source():
    """The source address attackers bind to: ATTACKER_SOURCE where the machine takes it, else 127.0.0.1."""
    with socket.socket() as probe:
        try:
            probe.bind((ATTACKER_SOURCE, 0))
            return ATTACKER_SOURCE
        except OSError:
            return "127.0.0.1"


def connect(port, source=None, timeout=10.0):
    """A plain TCP connection to the router on 127.0.0.1:port, from source if given."""
    return socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0) if source else None)


def websocket_upgrade(port, protocol="wamp.2.json", source=None, origin=None):
    """A WebSocket connection to /ws, upgraded by hand (with an Origin header if given); returns the socket and the
    router's response head."""
    sock = connect(port, source)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocol}\r\n"
                  + (f"Origin: {origin}\r\n" if origin else "") + "\r\n")
                 .encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return sock, head


def websocket_frame(payload, opcode=1):
    """One final, masked client frame (opcode 1: text, 2: binary)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 2**16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    keystream = (mask * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(length, "big") if length else b""
    return head + mask + masked


def rawsocket_open(port, serializer=2, source=None):
    """A RawSocket connection after its handshake (0x7F, max length 2**24, serializer: 1 json, 2 msgpack, 3 cbor);
    returns the socket and the router's 4-byte reply."""
    sock = connect(port, source)
    sock.sendall(bytes([0x7F, 0xF0 | serializer, 0, 0]))
    reply = b""
    while len(reply) < 4:
        chunk = sock.recv(4 - len(reply))
        if not chunk:
            break
        reply += chunk
    return sock, reply


def rawsocket_message(payload):
    """One RawSocket message: a 4-byte length prefix and the payload."""
    return struct.pack("!I", len(payload)) + payload


def deep_json(depth):
    """A JSON text of `depth` nested arrays."""
    return b"[" * depth + b"]" * depth


def deep_msgpack(depth):
    """msgpack of `depth` nested one-element arrays around an empty map."""
    return b"\x91" * depth + b"\x80"


def empty_maps_msgpack(size):
    """About `size` bytes of msgpack: one array of empty maps, each one byte on the wire and ~64 bytes parsed."""
    count = size - 5
    return b"\xdd" + struct.pack("!I", count) + b"\x80" * count


def send_quietly(sock, data):
    """sendall, ignoring a router that has already closed the connection; True if everything was sent."""
    try:
        sock.sendall(data)
        return True
    except OSError:
        return False


def closed(sock):
    """Whether the router has closed sock (what it sent meanwhile is read and dropped; never blocks)."""
    try:
        sock.settimeout(0.0)  # with a timeout, recv would wait for it even with MSG_DONTWAIT
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def close_all(socks):
    for sock in socks:
        try:
            sock.close()
        except OSError:
            pass


# --- What the router worker spends ---------------------------------------------------------------------------------

def router_worker(router):
    """The router worker process of a RouterProcess (the node controller's child)."""
    children = psutil.Process(router.process.pid).children()
    return next(child for child in children if "RouterController" in " ".join(child.cmdline()) or "router" in child.name())


class WorkerMeter:
    """The router worker's CPU seconds, peak RSS growth (sampled every `interval` s) and log growth over a span."""

    def __init__(self, router, interval=0.02):
        self.router, self.interval = router, interval
        self.process = router_worker(router)
        self.peak = 0
        self._running = False

    def _cpu(self):
        times = self.process.cpu_times()
        return times.user + times.system

    def _sample(self):
        while self._running:
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(self.interval)

    def __enter__(self):
        self.started = time.monotonic()
        self.rss = self.peak = self.process.memory_info().rss
        self.cpu = self._cpu()
        self.log = len(self.router.log_text().encode())
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._running = False
        self._thread.join()
        self.cpu_seconds = self._cpu() - self.cpu
        self.memory_mb = (self.peak - self.rss) / 2**20
        self.log_bytes = len(self.router.log_text().encode()) - self.log
        self.ended = time.monotonic()


def log_quiet(router, seconds=1.0, timeout=15.0):
    """A Deferred firing once the router's log has not grown for `seconds`."""
    state = {"size": -1, "since": time.monotonic()}

    def quiet():
        size = len(router.log_text())
        if size != state["size"]:
            state["size"], state["since"] = size, time.monotonic()
        return time.monotonic() - state["since"] >= seconds

    return wait_until(quiet, timeout=timeout, interval=0.1, message="a quiet router log")

