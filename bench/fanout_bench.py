"""Fan-out to dashboards: what each open dashboard costs the router, at 100 and 1,000 hosts.

    .venv/bin/python bench/fanout_bench.py [--hosts 100,1000] [--dashboards 0,1,2] [--seconds 15]

One router, an orchestrator, two analyzers and a simulator of H hosts at 1 Hz; for each count
of real headless Chromium pages on the overview, the router's own counters (nerve.router.stats)
give messages per second (all, and events sent) and the router worker's CPU over `--seconds`.
The cost of one dashboard is the difference to no dashboard, divided by the count. The bytes a
dashboard receives come from a JSON subscriber of the same digest. An overview must cost O(1)
events per tick whatever the number of hosts: compare the events per dashboard at 100 and 1,000.
"""

import argparse
import json
import tempfile

from twisted.internet import defer, task

from common import machine_line, open_dashboards, router_rates  # noqa: E402 (puts the project on sys.path)
from components.testing.live import ComponentProcess, RouterProcess, join, sleep, wait_for_callees  # noqa: E402


@defer.inlineCallbacks
def measure(observer, seconds, digest_bytes):
    """Router messages/s, events sent/s and worker CPU % over `seconds`, and the digest's JSON bytes/s."""
    before = yield observer.call("nerve.router.stats")
    digest_bytes[0] = 0
    yield sleep(seconds)
    after = yield observer.call("nerve.router.stats")
    messages, cpu = router_rates(before, after)
    wall = after["now"] - before["now"]
    events = (after["sent"].get("Event", 0) - before["sent"].get("Event", 0)) / wall
    return {"messages": messages, "events": events, "cpu": cpu, "digest_bytes": digest_bytes[0] / wall}


@defer.inlineCallbacks
def main(reactor, args):
    router = RouterProcess(tempfile.mkdtemp(prefix="nerve-fanout-")).start()
    processes = [ComponentProcess(router, "orchestrator")]
    processes += [ComponentProcess(router, "analyzer", "--authid", f"fanout-{k}") for k in (1, 2)]
    rows = []
    try:
        observer = yield join(router.rawsocket_url, "operator", "fanout-observer", router.ticket("operator", "fanout-observer"),
                              serializers=("msgpack",))
        yield wait_for_callees(observer, "nerve.analyze", 2)
        digest_bytes = [0]

        def on_digest(digest):
            digest_bytes[0] += len(json.dumps(digest, separators=(",", ":")))

        for hosts in args.hosts:
            simulator = ComponentProcess(router, "tracker", "--hosts", str(hosts), "--interval", "1", "--authid", f"sim-{hosts}")
            subscription = yield observer.subscribe(on_digest, "nerve.digest")
            yield sleep(8)
            try:
                for count in args.dashboards:
                    pages = open_dashboards(router.http_url, count, 3600)
                    yield sleep(8 if count else 1)  # pages load, take the snapshot and settle on the digest
                    figures = yield measure(observer, args.seconds, digest_bytes)
                    for page in pages:
                        page.terminate()
                    rows.append(dict(figures, hosts=hosts, dashboards=count))
                    print(f"  {hosts} hosts, {count} dashboards: {figures['messages']:,.0f} msg/s, "
                          f"{figures['events']:,.0f} events/s sent, router {figures['cpu']:.0f} %", flush=True)
                    yield sleep(3)
            finally:
                yield subscription.unsubscribe()
                simulator.stop()
            yield sleep(3)
        yield observer.leave()
    finally:
        for process in processes:
            process.stop()
        router.stop()

    print(f"{machine_line()}; {args.seconds:.0f} s per row; orchestrator defaults (digest every 0.25 s, changed hosts only)")
    print(f"{'hosts':>6} {'dashboards':>10} {'router msg/s':>12} {'events sent/s':>13} {'router CPU %':>12} "
          f"{'per dashboard: events/s':>23} {'msg/s':>6} {'CPU %':>6} {'digest KB/s':>11}")
    summary = []
    for hosts in args.hosts:
        base = next(row for row in rows if row["hosts"] == hosts and row["dashboards"] == 0)
        for row in (row for row in rows if row["hosts"] == hosts):
            count = row["dashboards"]
            per = [(row[key] - base[key]) / count if count else float("nan") for key in ("events", "messages", "cpu")]
            print(f"{hosts:>6} {count:>10} {row['messages']:>12,.0f} {row['events']:>13,.0f} {row['cpu']:>12.1f} "
                  f"{per[0]:>23.1f} {per[1]:>6.1f} {per[2]:>6.1f} {row['digest_bytes'] / 1024:>11.1f}")
        top = max((row for row in rows if row["hosts"] == hosts), key=lambda row: row["dashboards"])
        if top["dashboards"]:
            summary.append(f"{hosts} hosts: {(top['events'] - base['events']) / top['dashboards']:.1f} events/s and "
                           f"{(top['cpu'] - base['cpu']) / top['dashboards']:.1f} % router CPU per dashboard, "
                           f"digest {top['digest_bytes'] / 1024:.0f} KB/s")
    print("summary: " + "; ".join(summary))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=lambda text: [int(h) for h in text.split(",")], default=[100, 1000])
    parser.add_argument("--dashboards", type=lambda text: [int(d) for d in text.split(",")], default=[0, 1, 2])
    parser.add_argument("--seconds", type=float, default=15.0)
    task.react(main, (parser.parse_args(),))
