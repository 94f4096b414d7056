"""Do Crossbar proxy workers raise how many events/s one node routes for our realm? Measured in one run.

    .venv/bin/python bench/proxy_bench.py [--proxies 1,2] [--pairs 2] [--transports rs-msgpack,ws-json]
        [--seconds 10] [--warmup 3] [--rounds 2]

Method. One realm runs in one router worker (one core). Proxy workers (`"type": "proxy"`) take
the client connections, WebSocket framing, (de)serialization and authentication off it and talk
to the router worker over a unix-socket RawSocket (msgpack). Node configs compared, each started
fresh per round:
  plain      the project's router config as the tests run it (components.node.routerctl);
  proxy xN   bench/proxy_config.py: the same router worker (realm, roles, embedded authenticator
             and tracker authorizer, nerve.router.stats) on a unix socket, N proxy workers sharing
             the public TCP port ("shared": true) with the project's dynamic ticket auth.
For each config and transport (RawSocket + msgpack as backend components connect, WebSocket +
JSON as browsers do), `--pairs` publisher processes each flood their own topic
(nerve.measure.sim-bench-K, simulator role, ~80-byte payload) to one subscriber process each
(orchestrator role). A publisher stays at most 2,000 events ahead of its subscriber (the
subscriber's count is shared through a memory-mapped file, so flow control costs the router
nothing) and holds back while its socket buffer passes 64 KiB: the slowest stage sets the rate
and no stage (proxies included) builds an unbounded backlog. After `--warmup` s, over `--seconds` s: events delivered to
the subscribers per second, events published per second, router messages per second (the
router worker's own counters, nerve.router.stats), CPU (% of one core, psutil) of the router
worker, each proxy worker, the publishers and subscribers, and the machine's busy share of all
cores. Every client is a separate process (and joins as the project's components do, through
the public port).

Derived: router-worker CPU per delivered event (us), proxies' CPU per delivered event, and the
router-bound estimate = delivered/s x 100 / router CPU %: what the node would route if the
router worker alone were the limit (clients and proxies on other cores). "limit" names what
was saturated (>= 85 % of a core, or the machine >= 90 % busy). Rows are medians over
`--rounds`; "range" is the delivered min-max. "conns/proxy" counts the client connections
(publishers, subscribers, the stats observer) each proxy got in the last round: the kernel's
SO_REUSEPORT hash spreads them, not evenly, so with few clients one proxy may carry most of the
load. The last line starts with `summary:`.
"""

import argparse
import json
import mmap
import os
import queue
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

import psutil

from common import CpuMeter, busy_share, machine_line  # noqa: E402 (puts the project on sys.path)
from components.node.routerctl import CROSSBAR, wait_for_port  # noqa: E402
from components.testing.live import RouterProcess  # noqa: E402
import proxy_config  # noqa: E402

TRANSPORTS = {"rs-msgpack": ("rawsocket_url", "msgpack"), "ws-json": ("websocket_url", "json")}
PAYLOAD = {"host": "sim-bench", "ts": 0.0, "cpu": 12.5, "mem": 40.1, "seq": 0}
SEND_BUFFER_LIMIT = 64 * 1024
WINDOW = 2000  # events a publisher may be ahead of its subscriber
SATURATED = 85.0


# ----------------------------------------------------------------------------------------------
# Child processes: publisher, subscriber, observer. Line protocol: commands on stdin, JSON on stdout.

def child_main(args):
    """Run one WAMP client process; it answers commands read from stdin with JSON lines."""
    from twisted.internet import defer, reactor, task

    from components.testing.live import join, sleep

    state = {"count": 0, "running": False}
    # The subscriber's delivered count, shared with its publisher through a memory-mapped file:
    # end-to-end flow control that costs the router nothing (no acknowledgements).
    counter = None
    if args.counter:
        with open(args.counter, "r+b") as file:
            counter = mmap.mmap(file.fileno(), 8)

    def delivered():
        return struct.unpack_from("q", counter)[0]

    def say(**fields):
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()

    def pending_bytes(session):
        tcp = getattr(session._transport, "transport", None)
        if tcp is None:
            return 0
        return len(getattr(tcp, "dataBuffer", b"")) + getattr(tcp, "_tempDataLen", 0)

    @defer.inlineCallbacks
    def flood(session):
        payload = dict(PAYLOAD, host=args.authid)
        while state["running"] and not (args.cap and state["count"] >= args.cap):
            for _ in range(min(100, args.cap - state["count"]) if args.cap else 100):
                payload["seq"] = state["count"]
                session.publish(args.topic, payload)
                state["count"] += 1
            # yield to the reactor every 100 events; wait while the socket does not take more
            yield sleep(0)
            while state["running"] and (pending_bytes(session) > SEND_BUFFER_LIMIT
                                        or state["count"] - delivered() > WINDOW):
                yield sleep(0.0005)

    @defer.inlineCallbacks
    def handle(line, session):
        command = line.strip()
        if command == "mark":
            say(t=time.monotonic(), n=state["count"])
        elif command == "go":
            state["running"] = True
            flood(session)
        elif command == "stop":
            state["running"] = False
            say(t=time.monotonic(), n=state["count"])
        elif command == "stats":
            stats = yield session.call("nerve.router.stats")
            say(t=time.monotonic(), stats=stats)
        elif command == "quit":
            state["running"] = False
            try:
                yield session.leave()
            finally:
                reactor.stop()

    @defer.inlineCallbacks
    def main(reactor_):
        ticket = os.environ.get("NERVE_BENCH_TICKET")
        session = yield join(args.url, args.role, args.authid, ticket, serializers=(args.serializer,))
        if args.child == "sub":
            def on_event(*event_args, **kwargs):
                state["count"] += 1
                struct.pack_into("q", counter, 0, state["count"])
            yield session.subscribe(on_event, args.topic)
        say(ready=True, pid=os.getpid())

        def read_stdin():
            for line in sys.stdin:
                reactor.callFromThread(handle, line, session)
            reactor.callFromThread(lambda: reactor.running and reactor.stop())

        threading.Thread(target=read_stdin, daemon=True).start()
        yield defer.Deferred()  # run until "quit" stops the reactor

    task.react(lambda reactor_: main(reactor_).addErrback(lambda f: (say(error=str(f.value)), f)[1]))


class Child:
    """A client process driven over its stdin/stdout."""

    def __init__(self, kind, url, role, authid, ticket, serializer, topic, logdir, cap=0, counter=""):
        command = [sys.executable, os.path.abspath(__file__), "--child", kind, "--url", url, "--role", role,
                   "--authid", authid, "--serializer", serializer, "--topic", topic, "--cap", str(cap),
                   "--counter", counter]
        self.log = open(os.path.join(logdir, f"{kind}-{authid}.log"), "ab")
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                        env=dict(os.environ, NERVE_BENCH_TICKET=ticket, PYTHONUNBUFFERED="1"),
                                        text=True, bufsize=1, start_new_session=True)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(json.loads(line))
        self.lines.put({"error": f"exited with {self.process.wait()}"})

    def send(self, command):
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def expect(self, timeout=60.0):
        try:
            answer = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"no answer from {self.process.args[3]} within {timeout} s")
        if "error" in answer:
            raise RuntimeError(f"{self.process.args[3]} {self.process.args[9]}: {answer['error']}")
        return answer

    def ask(self, command, timeout=30.0):
        self.send(command)
        return self.expect(timeout)

    def stop(self):
        if self.process.poll() is None:
            try:
                self.send("quit")
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self.log.close()


# ----------------------------------------------------------------------------------------------
# Nodes

class ProxyNode(RouterProcess):
    """The project's router worker behind `proxies` proxy workers sharing the public port."""

    def __init__(self, proxies, workdir=None):
        super().__init__(workdir or tempfile.mkdtemp(prefix="nerve-proxy-"))
        self.proxies = proxies

    def start(self):
        cbdir = proxy_config.write_node_cbdir(self.workdir / "cbdir", self.port, self.secrets_file, proxies=self.proxies)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([str(CROSSBAR), "start", "--cbdir", str(cbdir), "--loglevel", "warn"],
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port(self.port, self.process, timeout=120)
        # the port opens with the first proxy; clients joining before the others listen would all land on it
        deadline = time.monotonic() + 120
        while len(listening_workers(self)) < self.proxies:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"only {len(listening_workers(self))} of {self.proxies} proxies listen; see {self.log_path}")
            time.sleep(0.2)
        return self


def workers(node):
    """{"router": [pid], "proxy": [pids]} of the node's worker processes (children of the controller)."""
    found = {"router": [], "proxy": []}
    for child in psutil.Process(node.process.pid).children(recursive=True):
        try:
            title = " ".join(child.cmdline())
        except psutil.NoSuchProcess:
            continue
        if "RouterController" in title or "--klass crossbar.worker.router.RouterController" in title:
            found["router"].append(child.pid)
        elif "ProxyController" in title:
            found["proxy"].append(child.pid)
    return found


def _connections(pid):
    process = psutil.Process(pid)
    getter = getattr(process, "net_connections", None) or process.connections
    return getter(kind="tcp")


def listening_workers(node):
    """Proxy worker pids listening on the public port."""
    return [pid for pid in workers(node)["proxy"]
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == node.port for c in _connections(pid))]


def clients_per_worker(node, pids):
    """Established public-port connections per worker pid."""
    return [sum(1 for c in _connections(pid) if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == node.port)
            for pid in pids]


# ----------------------------------------------------------------------------------------------
# One measurement

def measure(node, transport, pairs, args, logdir):
    """Flood `pairs` publisher->subscriber pairs through node; returns the run's figures."""
    url_attribute, serializer = TRANSPORTS[transport]
    url = getattr(node, url_attribute)
    observer = Child("obs", node.rawsocket_url, "operator", "bench-observer", node.ticket("operator", "bench-observer"),
                     "msgpack", "-", logdir)
    subscribers, publishers = [], []
    try:
        for k in range(pairs):
            topic = f"nerve.measure.sim-bench-{k + 1}"
            sub_id, pub_id = f"bench-sub-{k + 1}", f"sim-bench-{k + 1}"
            counter = os.path.join(logdir, f"counter-{time.monotonic_ns()}-{k + 1}")
            with open(counter, "wb") as file:
                file.write(bytes(8))
            subscribers.append(Child("sub", url, "orchestrator", sub_id, node.ticket("orchestrator", sub_id),
                                     serializer, topic, logdir, counter=counter))
            publishers.append(Child("pub", url, "simulator", pub_id, node.ticket("simulator", pub_id),
                                    serializer, topic, logdir, cap=args.cap, counter=counter))
        for child in [observer] + subscribers + publishers:
            child.expect(timeout=120)
        found = workers(node)
        router_pid, proxy_pids = found["router"][0], found["proxy"]
        spread = clients_per_worker(node, proxy_pids) if proxy_pids else []

        for publisher in publishers:
            publisher.send("go")
        time.sleep(args.warmup)

        meters = [CpuMeter("router", router_pid, children=False)]
        meters += [CpuMeter(f"proxy{i + 1}", pid, children=False) for i, pid in enumerate(proxy_pids)]
        meters += [CpuMeter(f"pub{i + 1}", c.process.pid, children=False) for i, c in enumerate(publishers)]
        meters += [CpuMeter(f"sub{i + 1}", c.process.pid, children=False) for i, c in enumerate(subscribers)]
        meters.append(CpuMeter("controller", node.process.pid, children=False))
        stats_before = observer.ask("stats")["stats"]
        subs_before = [c.ask("mark") for c in subscribers]
        pubs_before = [c.ask("mark") for c in publishers]
        machine_before = psutil.cpu_times()
        for meter in meters:
            meter.begin()
        time.sleep(args.seconds)
        usage = {meter.name: meter.end()[0] for meter in meters}
        machine_after = psutil.cpu_times()
        subs_after = [c.ask("mark") for c in subscribers]
        pubs_after = [c.ask("mark") for c in publishers]
        stats_after = observer.ask("stats")["stats"]
        for publisher in publishers:
            publisher.ask("stop")
    finally:
        for child in publishers + subscribers + [observer]:
            child.stop()

    delivered = sum((a["n"] - b["n"]) / (a["t"] - b["t"]) for a, b in zip(subs_after, subs_before))
    published = sum((a["n"] - b["n"]) / (a["t"] - b["t"]) for a, b in zip(pubs_after, pubs_before))
    wall = stats_after["now"] - stats_before["now"]
    messages = (stats_after["received_total"] + stats_after["sent_total"]
                - stats_before["received_total"] - stats_before["sent_total"]) / wall
    proxies_cpu = [usage[name] for name in usage if name.startswith("proxy")]
    return {"delivered": delivered, "published": published, "messages": messages,
            "router": usage["router"], "proxies": proxies_cpu,
            "pubs": sum(v for n, v in usage.items() if n.startswith("pub")),
            "subs": sum(v for n, v in usage.items() if n.startswith("sub")),
            "max_client": max(v for n, v in usage.items() if n.startswith(("pub", "sub"))),
            "machine": busy_share(machine_before, machine_after) * 100, "spread": spread, "usage": usage}


def limit_of(run):
    """What was saturated in a run."""
    found = []
    if run["router"] >= SATURATED:
        found.append(f"router {run['router']:.0f}%")
    for i, cpu in enumerate(run["proxies"]):
        if cpu >= SATURATED:
            found.append(f"proxy{i + 1} {cpu:.0f}%")
    clients = sorted(((n, v) for n, v in run["usage"].items() if n.startswith(("pub", "sub"))), key=lambda x: -x[1])
    found += [f"{n} {v:.0f}%" for n, v in clients if v >= SATURATED]
    if run["machine"] >= 90:
        found.append(f"machine {run['machine']:.0f}%")
    return ", ".join(found) or "nothing >= 85 %"


# ----------------------------------------------------------------------------------------------

def ratio(a, b):
    """a / b, NaN when b is 0."""
    return a / b if b else float("nan")


def config_name(proxies):
    return "plain" if proxies == 0 else f"proxy x{proxies}"


def start_node(proxies):
    node = RouterProcess(tempfile.mkdtemp(prefix="nerve-proxybench-")) if proxies == 0 else ProxyNode(proxies)
    node.start()
    time.sleep(1.0)  # let the embedded authenticator register
    return node


def main(args):
    configs = [0] + [n for n in args.proxies if n > 0]
    runs = {}
    logdir = tempfile.mkdtemp(prefix="nerve-proxybench-clients-")
    for round_index in range(args.rounds):
        for proxies in configs:
            node = start_node(proxies)
            try:
                for transport in args.transports:
                    run = measure(node, transport, args.pairs, args, logdir)
                    runs.setdefault((proxies, transport), []).append(run)
                    print(f"  round {round_index + 1} {config_name(proxies):<9} {transport:<10} "
                          f"delivered {run['delivered']:>7,.0f}/s, router {run['router']:.0f}%, proxies "
                          f"{'/'.join(f'{c:.0f}' for c in run['proxies']) or '-'}%, machine {run['machine']:.0f}%",
                          flush=True)
            finally:
                node.stop()

    def med(values):
        return statistics.median(values) if values else float("nan")

    print(f"{machine_line()}; load average {os.getloadavg()[0]:.1f}; {args.pairs} publisher + {args.pairs} subscriber "
          f"processes, {args.seconds:.0f} s after {args.warmup:.0f} s warm-up, medians of {args.rounds} round(s)")
    header = (f"{'config':<9} {'transport':<10} {'published/s':>11} {'delivered/s':>11} {'range':>13} {'vs plain':>8} "
              f"{'router msg/s':>12} {'router CPU':>10} {'proxies CPU':>11} {'router us/ev':>12} {'proxy us/ev':>11} "
              f"{'router-bound':>12} {'pubs CPU':>8} {'subs CPU':>8} {'machine':>7} {'conns/proxy':>11}  limit (last round)")
    print(header)
    rows = {}
    for transport in args.transports:
        for proxies in configs:
            group = runs[(proxies, transport)]
            delivered = med([r["delivered"] for r in group])
            router_cpu = med([r["router"] for r in group])
            row = {
                "delivered": delivered,
                "router_us": med([ratio(r["router"] / 100 * 1e6, r["delivered"]) for r in group]),
                "proxy_us": med([ratio(sum(r["proxies"]) / 100 * 1e6, r["delivered"]) for r in group]) if proxies else 0.0,
                "bound": med([ratio(r["delivered"] * 100, r["router"]) for r in group]),
                "router_cpu": router_cpu, "machine": med([r["machine"] for r in group]),
            }
            rows[(proxies, transport)] = row
            plain = rows[(0, transport)]["delivered"]
            per_proxy = "/".join(f"{med([r['proxies'][i] for r in group]):.0f}" for i in range(proxies)) if proxies else "-"
            print(f"{config_name(proxies):<9} {transport:<10} {med([r['published'] for r in group]):>11,.0f} "
                  f"{delivered:>11,.0f} "
                  f"{min(r['delivered'] for r in group):>6,.0f}-{max(r['delivered'] for r in group):<6,.0f} "
                  f"{ratio(delivered, plain):>8.2f} {med([r['messages'] for r in group]):>12,.0f} {router_cpu:>9.0f}% "
                  f"{per_proxy + '%' if proxies else '-':>11} {row['router_us']:>12.0f} "
                  f"{row['proxy_us'] if proxies else float('nan'):>11.0f} {row['bound']:>12,.0f} "
                  f"{med([r['pubs'] for r in group]):>7.0f}% {med([r['subs'] for r in group]):>7.0f}% "
                  f"{row['machine']:>6.0f}% {'/'.join(map(str, group[-1]['spread'])) or '-':>11}  {limit_of(group[-1])}")
    parts = []
    for transport in args.transports:
        plain = rows[(0, transport)]
        text = (f"{transport}: plain {plain['delivered']:,.0f} ev/s (router {plain['router_us']:.0f} us/event, "
                f"router-bound {plain['bound']:,.0f})")
        for proxies in configs[1:]:
            row = rows[(proxies, transport)]
            text += (f", {proxies} prox{'y' if proxies == 1 else 'ies'} {row['delivered']:,.0f} "
                     f"(x{ratio(row['delivered'], plain['delivered']):.2f}; router {row['router_us']:.0f} us/event, "
                     f"proxies {row['proxy_us']:.0f} us/event, router-bound {row['bound']:,.0f} = "
                     f"x{ratio(row['bound'], plain['bound']):.2f})")
        parts.append(text)
    print("summary: " + "; ".join(parts))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--proxies", type=lambda text: [int(n) for n in text.split(",")], default=[1, 2],
                        help="proxy worker counts to compare with the plain router (default 1,2)")
    parser.add_argument("--pairs", type=int, default=2, help="publisher/subscriber process pairs (default 2)")
    parser.add_argument("--transports", type=lambda text: text.split(","), default=list(TRANSPORTS),
                        help="comma-separated: " + ", ".join(TRANSPORTS))
    parser.add_argument("--seconds", type=float, default=10.0, help="measured span per run")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2, help="node starts per config; rows are medians")
    parser.add_argument("--cap", type=int, default=0, help="stop each publisher after this many events (smoke test)")
    # internal: run one client process
    parser.add_argument("--child", choices=["pub", "sub", "obs"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--authid", help=argparse.SUPPRESS)
    parser.add_argument("--serializer", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--counter", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.child:
        child_main(parsed)
    else:
        unknown = [t for t in parsed.transports if t not in TRANSPORTS]
        if unknown:
            parser.error(f"unknown transport(s) {unknown}; choose from {list(TRANSPORTS)}")
        main(parsed)
