"""What a hostile or broken peer costs the router, attack by attack, while the mesh keeps running.

    .venv/bin/python bench/abuse_bench.py [--hosts 100] [--guards off]

One router with the project's config, an orchestrator and a simulator of `--hosts` hosts, so the
orchestrator publishes nerve.digest every 0.25 s; an anonymous WebSocket session subscribes to it.
Then, one after the other, from raw sockets to 127.0.0.1 (the attackers' source address is
127.0.0.2 where the machine allows it, as a second machine would have its own):
- deep JSON over WebSocket: ten frames of the original report (nested 120,000 deep, 240 KB) and ten
  that fit the limit before HELLO (nested 32,000 deep, 64 KB), sent before HELLO;
- deep msgpack over RawSocket: ten messages of arrays nested 65,000 deep, before HELLO;
- 8 MB msgpack before HELLO x20: twenty connections at once, each an 8 MB message of empty maps;
- 1 MB authid login x10 (and 60 KB x10, which passes the size limit and reaches the authenticator);
- 2,000 bad meta calls: an anonymous session calls wamp.registration.lookup with no arguments;
- 2,000 silent connections: TCP connections that never send a byte.
For each: the router worker's CPU seconds, its peak memory growth (RSS sampled every 20 ms), the
bytes its log grew by, and the longest gap between two nerve.digest events, from the attack's start
until its connections are closed and the log is quiet. Bounds: memory < 50 MB, log < 100 KB,
gap < 1 s; the last line says pass or fail. `--guards off` starts the router with router/guards.py
switched off, for the picture before them (expect hundreds of MB and tracebacks).

The raw peers are components/testing/raw.py's, which tests/test_hardening.py uses too.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from twisted.internet import defer, task, threads

from common import machine_line  # noqa: E402 (puts the project on sys.path)
from components.testing.live import ComponentProcess, EventLog, RouterProcess, join, sleep, wait_until  # noqa: E402
from components.testing.raw import (  # noqa: E402
    WorkerMeter, attacker_source, closed, connect, deep_json, deep_msgpack, empty_maps_msgpack, log_quiet,
    rawsocket_message, rawsocket_open, send_quietly, websocket_frame, websocket_upgrade)

MEMORY_BOUND_MB = 50
LOG_BOUND_KB = 100
GAP_BOUND_S = 1.0


def deep_json_over_websocket(port, source, count=10):
    socks = []
    for payload in [deep_json(120000)] * count + [deep_json(32000)] * count:
        sock, _ = websocket_upgrade(port, source=source)
        send_quietly(sock, websocket_frame(payload))
        socks.append(sock)
    return socks


def deep_msgpack_over_rawsocket(port, source, count=10):
    socks = []
    for _ in range(count):
        sock, _ = rawsocket_open(port, 2, source)
        send_quietly(sock, rawsocket_message(deep_msgpack(65000)))
        socks.append(sock)
    return socks


def big_msgpack_before_hello(port, source, count=20, size=8 * 2**20):
    opened = [rawsocket_open(port, 2, source)[0] for _ in range(count)]
    message = rawsocket_message(empty_maps_msgpack(size))
    with ThreadPoolExecutor(count) as pool:
        list(pool.map(lambda sock: send_quietly(sock, message), opened))
    return opened


def silent_connections(port, source, count=2000):
    socks = []
    for _ in range(count):
        try:
            socks.append(connect(port, source))
        except OSError:
            break  # refused at accept: the router's caps work before the listen backlog
    return socks


@defer.inlineCallbacks
def logins(router, size, count):
    """count refused logins (tracker role, wrong ticket) with an authid of `size` characters."""
    for index in range(count):
        try:
            session = yield join(router.rawsocket_url, "tracker", f"{index:04d}" + "A" * (size - 4), "not-a-ticket")
            yield session.leave()
        except Exception:
            pass


@defer.inlineCallbacks
def bad_meta_calls(router, count):
    """count calls of wamp.registration.lookup without arguments, from an anonymous session, 100 at a time."""
    session = yield join(router.websocket_url)
    for start in range(0, count, 100):
        calls = [session.call("wamp.registration.lookup") for _ in range(min(100, count - start))]
        yield defer.DeferredList(calls, consumeErrors=True)
    yield session.leave()


RAW_ATTACKS = {"deep-json": deep_json_over_websocket, "deep-msgpack": deep_msgpack_over_rawsocket,
               "big-msgpack": big_msgpack_before_hello, "silent": silent_connections}


def raw_attack_process(name, port, source, timeout=20.0):
    """Run a raw attack in a process of its own (so its work does not delay this process's digest events) and wait
    until the router has closed its connections; returns how many were still open after `timeout` seconds."""
    result = subprocess.run([sys.executable, __file__, "--attack", name, "--port", str(port), "--source", source,
                             "--timeout", str(timeout)], capture_output=True, text=True, timeout=timeout + 60)
    if result.returncode:
        raise RuntimeError(f"attack {name} failed: {result.stderr[-2000:]}")
    return int(result.stdout.split()[-1])


def attack_and_wait(name, port, source, timeout):
    """The body of an attack process: attack, then poll until every connection is closed; prints the open count."""
    socks = RAW_ATTACKS[name](port, source)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(closed(sock) for sock in socks):
        time.sleep(0.05)
    print(sum(not closed(sock) for sock in socks))


@defer.inlineCallbacks
def run_attack(router, digests, name, attack):
    """Run one attack (a callable returning a Deferred that fires with the connections still open at its end)."""
    yield log_quiet(router, 0.5)
    with WorkerMeter(router) as meter:
        started = time.monotonic()
        still_open = yield attack()
        yield log_quiet(router, 1.0)
        yield sleep(0.5)
        ended = time.monotonic()
    window = [started] + [t for t in digests.arrivals if started <= t <= ended] + [ended]
    gap = max(later - earlier for earlier, later in zip(window, window[1:]))
    return {"attack": name, "cpu": meter.cpu_seconds, "memory": meter.memory_mb, "log": meter.log_bytes / 1024,
            "gap": gap, "seconds": ended - started, "still_open": still_open or 0}


@defer.inlineCallbacks
def main(reactor, args):
    tuning = {name: False for name in ("hello_deadline", "connection_caps", "small_messages_before_join",
                                       "short_parse_errors", "quiet_peer_errors", "web_hardening")} \
        if args.guards == "off" else None
    router = RouterProcess(tempfile.mkdtemp(prefix="nerve-abuse-"), tuning=tuning).start()
    processes = [ComponentProcess(router, "orchestrator"),
                 ComponentProcess(router, "tracker", "--hosts", str(args.hosts), "--authid", "abuse-sim")]
    port, source = router.port, attacker_source()

    def raw(name):
        return lambda: threads.deferToThread(raw_attack_process, name, port, source)

    attacks = [
        ("deep JSON over WebSocket", raw("deep-json")),
        ("deep msgpack over RawSocket", raw("deep-msgpack")),
        ("8 MB msgpack before HELLO x20", raw("big-msgpack")),
        ("1 MB authid login x10", lambda: logins(router, 2**20, 10)),
        ("60 KB authid login x10", lambda: logins(router, 60000, 10)),
        ("2,000 bad meta calls", lambda: bad_meta_calls(router, 2000)),
        ("2,000 silent connections", raw("silent")),
    ]
    rows = []
    try:
        reactor.suggestThreadPoolSize(4)
        watcher = yield join(router.websocket_url)
        digests = EventLog()
        yield watcher.subscribe(digests, "nerve.digest")
        yield wait_until(lambda: len(digests.arrivals) >= 8, timeout=60, message="digests flowing")
        rows.append((yield run_attack(router, digests, "none (baseline, 3 s)", lambda: sleep(3))))
        for name, attack in attacks:
            row = yield run_attack(router, digests, name, attack)
            rows.append(row)
            print(f"  {name}: {row['seconds']:.1f} s", flush=True)
        yield watcher.leave()
    finally:
        for process in processes:
            process.stop()
        router.stop()

    print(f"{machine_line()}; {args.hosts} simulated hosts; guards {args.guards}; attackers from {source}")
    print(f"{'attack':<30} {'router CPU s':>12} {'peak memory MB':>14} {'log KB':>8} {'digest gap s':>12} "
          f"{'open after':>10}")
    failed = []
    for row in rows:
        print(f"{row['attack']:<30} {row['cpu']:>12.2f} {row['memory']:>14.1f} {row['log']:>8.1f} {row['gap']:>12.2f} "
              f"{row['still_open']:>10}")
        if row["memory"] >= MEMORY_BOUND_MB or row["log"] >= LOG_BOUND_KB or row["gap"] >= GAP_BOUND_S:
            failed.append(row["attack"])
    verdict = "pass" if not failed else "fail (" + ", ".join(failed) + ")"
    print(f"summary: {verdict}: bounds memory < {MEMORY_BOUND_MB} MB, log < {LOG_BOUND_KB} KB, "
          f"digest gap < {GAP_BOUND_S:g} s per attack; worst memory {max(row['memory'] for row in rows):.1f} MB, "
          f"log {max(row['log'] for row in rows):.1f} KB, gap {max(row['gap'] for row in rows):.2f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--guards", choices=("on", "off"), default="on")
    parser.add_argument("--attack", choices=sorted(RAW_ATTACKS), help=argparse.SUPPRESS)  # an attack process
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=20.0, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.attack:
        attack_and_wait(arguments.attack, arguments.port, arguments.source, arguments.timeout)
    else:
        task.react(main, (arguments,))
