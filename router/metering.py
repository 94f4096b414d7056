"""Router-side message counters: what the router worker receives and sends, by WAMP message type.

The router worker is the mesh's ceiling (one realm runs on one core), so its message rate is
the figure capacity is planned from. Counting is one dict increment per message.
"""

import sys
import time
from collections import Counter

from crossbar.router.router import Router
from crossbar.router.session import RouterSession

from components.mesh.collector import collection_stats, time_collections

STATS_URI = "nerve.router.stats"

received = Counter()
sent = Counter()
_started = time.time()
_original_on_message = RouterSession.onMessage
_original_send = Router.send


def _counted_on_message(self, msg):
    received[msg.__class__.__name__] += 1
    return _original_on_message(self, msg)


def _counted_send(self, session, msg):
    sent[msg.__class__.__name__] += 1
    return _original_send(self, session, msg)


def count_messages(enabled=True):
    """Count every message the router worker receives from and sends to sessions, and time its collections
    (idempotent; enabled=False puts Crossbar's own methods back)."""
    RouterSession.onMessage = _counted_on_message if enabled else _original_on_message
    Router.send = _counted_send if enabled else _original_send
    if enabled:
        time_collections()


def router_stats():
    """Messages received and sent by type since the worker started, the worker's CPU seconds and its collections."""
    return {"since": _started, "now": time.time(), "cpu_seconds": time.process_time(), "gc": collection_stats(),
            "recursion_limit": sys.getrecursionlimit(),
            "received": dict(received), "sent": dict(sent),
            "received_total": sum(received.values()), "sent_total": sum(sent.values())}
