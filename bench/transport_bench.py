"""RawSocket+msgpack vs WebSocket+JSON through the project's router, measured in one run.

    .venv/bin/python bench/transport_bench.py [--events 20000]

One publisher session and one subscriber session (both backend roles) per transport; the
publisher sends as fast as it can; prints delivered events per second and a summary line.
"""

import argparse
import tempfile

from twisted.internet import defer, task

from common import flood  # noqa: E402 (also puts the project on sys.path)
from components.testing.live import RouterProcess, join, sleep  # noqa: E402

TRANSPORTS = [("WebSocket + JSON", "websocket_url", ("json",)), ("WebSocket + msgpack", "websocket_url", ("msgpack",)),
              ("RawSocket + msgpack", "rawsocket_url", ("msgpack",))]


@defer.inlineCallbacks
def run_one(router, url, serializers, events):
    """Delivered events per second from one publisher to one subscriber."""
    publisher = yield join(url, "tracker", "bench-pub", router.ticket("tracker", "bench-pub"), serializers=serializers)
    subscriber = yield join(url, "orchestrator", "bench-sub", router.ticket("orchestrator", "bench-sub"), serializers=serializers)
    delivered = yield flood(publisher, subscriber, "nerve.measure.bench-pub", events)
    yield publisher.leave()
    yield subscriber.leave()
    return delivered


@defer.inlineCallbacks
def main(reactor, args):
    router = RouterProcess(tempfile.mkdtemp(prefix="nerve-transport-")).start()
    try:
        yield sleep(1)
        results = []
        for name, attribute, serializers in TRANSPORTS:
            rate = yield run_one(router, getattr(router, attribute), serializers, args.events)
            results.append((name, rate))
        print(f"{'transport':<24} {'delivered events/s':>20}")
        for name, rate in results:
            print(f"{name:<24} {rate:>20,.0f}")
        ratio = results[-1][1] / results[0][1]
        print(f"summary: RawSocket+msgpack moves {ratio:.2f}x WebSocket+JSON through the nerve router ({args.events} events each)")
    finally:
        router.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20000)
    task.react(main, (parser.parse_args(),))
