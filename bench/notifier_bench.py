"""Notifier bench: alert record → webhook delivered, and nothing lost or doubled across kills and an outage.

    .venv/bin/python bench/notifier_bench.py [--hosts 1000] [--outage 60] [--churn-seconds 80]

Everything is real but the alert keeper: a router, `nerve notifier` processes and a webhook receiver (an HTTP
server in this process). The bench plays the keeper: it publishes alert records on nerve.alerts.changed as the
role `alerts` and serves nerve.alerts.open() with the alerts open now, as `nerve alerts` does.

1. Latency, group_wait = 0: one alert per simulated host (`--hosts`), published paced over 5 s, then all of them
   resolved in one burst. Per notification: record ts (publish time) → the webhook's arrival (same clock).
2. Delivery across faults: `--churn` new alerts per second for `--churn-seconds`, each resolved 15 s after it
   opened. The notifier is SIGKILLed once while the webhook takes messages (10 s in) and once halfway through a
   `--outage`-second webhook outage (from 15 s in), with its outbox full; each time a new one starts on the same
   data directory. Counted at the receiver: notifications expected (a firing and a resolution per alert), received,
   lost (expected keys never received) and duplicates (a key received more than once).
Prints a table per part and, last, a summary line with PASS / FAIL against issue 18's targets: p99 < 1 s on the
paced phase (1,000 hosts whose alerts come over time; the burst of every resolution at once is a worst case, shown
beside it), zero lost, zero duplicates. Timings on a shared machine are inflated by its other load; the counts and
the notifier's CPU seconds per notification are not.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402
from autobahn.wamp.types import PublishOptions  # noqa: E402
from twisted.internet import defer, task  # noqa: E402

from bench.common import machine_line, percentile  # noqa: E402
from components.testing.live import ComponentProcess, RouterProcess, call_until, join, sleep  # noqa: E402
from components.testing.receivers import WebhookReceiver  # noqa: E402

TARGET_P99_MS = 1000
CHANGED = "nerve.alerts.changed"
RESOLVE_AFTER = 15.0
ACKNOWLEDGED = PublishOptions(acknowledge=True)


class Keeper:
    """The alert keeper's side: publishes records and answers nerve.alerts.open() with those open now."""

    def __init__(self, session):
        self.session = session
        self.open = {}
        self.expected = set()  # every key a notifier owes the receiver

    def fire(self, host, metric="cpu"):
        now = time.time()
        record = {"id": f"{host}/{metric}/{int(now * 1000)}", "host_id": host, "hostname": host, "metric": metric,
                  "level": "HIGH", "previous": "LOW", "value": 99.0, "ts": now, "opened_at": now, "status": "firing",
                  "state": "firing", "acked_by": None, "silenced_by": None, "resolved_at": None, "updated_at": now,
                  "url": f"/#host={host}"}
        self.open[record["id"]] = record
        self.expected.add(f"{record['id']}|firing|0")
        return self.session.publish(CHANGED, record, options=ACKNOWLEDGED)

    def resolve(self, alert_id):
        now = time.time()
        record = dict(self.open.pop(alert_id), status="resolved", state="resolved", level="HIGH", ts=now,
                      resolved_at=now, updated_at=now)
        self.expected.add(f"{alert_id}|resolved|0")
        return self.session.publish(CHANGED, record, options=ACKNOWLEDGED)

    def alerts_open(self, since=None):
        # Every alert the bench resolves was open when the notifier last heard: none resolved unheard to report.
        return {"alerts": sorted(self.open.values(), key=lambda record: -record["opened_at"]), "silences": [],
                "resolved": []}


def start_notifier(router, workdir, url, data_dir, max_retry_delay):
    config = workdir / "notify.toml"
    config.write_text(f'max_retry_delay = {max_retry_delay}\n[channels.hook]\ntype = "webhook"\nurl = "{url}"\n'
                      f'[[routes]]\nchannels = ["hook"]\ngroup_wait = 0\n')
    return ComponentProcess(router, "notifier", "--config", str(config), "--data-dir", str(data_dir),
                            env={"NERVE_LOG_LEVEL": "warn"})


def cpu_seconds(process):
    try:
        times = psutil.Process(process.process.pid).cpu_times()
        return times.user + times.system
    except psutil.Error:
        return 0.0


@defer.inlineCallbacks
def leading(dashboard, timeout=30.0):
    yield call_until(dashboard, "nerve.notifier.stats", lambda stats: stats["leader"], timeout=timeout)


@defer.inlineCallbacks
def latency_part(router, workdir, hosts, keeper, dashboard):
    hook = WebhookReceiver()
    notifier = start_notifier(router, workdir, hook.url, workdir / "latency-data", 30)
    try:
        yield leading(dashboard)
        cpu_before = cpu_seconds(notifier)
        rows = []
        started = time.time()
        for index in range(hosts):
            yield keeper.fire(f"sim-{index:04d}")
            lag = started + (index + 1) * 5.0 / hosts - time.time()
            if lag > 0:
                yield sleep(lag)
        yield wait_for_keys(hook, keeper.expected, 60)
        rows.append(("fire, paced over 5 s", latencies(hook)))
        hook.messages.clear()
        yield defer.gatherResults([keeper.resolve(alert_id) for alert_id in list(keeper.open)])
        yield wait_for_keys(hook, {key for key in keeper.expected if "|resolved|" in key}, 60)
        rows.append(("resolve, all at once", latencies(hook)))
        cpu = cpu_seconds(notifier) - cpu_before
    finally:
        notifier.stop()
        yield hook.down()
    return rows, cpu


def latencies(hook):
    """ms from each alert's ts (its publish time) to its message's arrival."""
    wall_offset = time.time() - time.monotonic()
    return [(arrived + wall_offset - alert["ts"]) * 1000 for arrived, _, body in hook.messages for alert in body["alerts"]]


@defer.inlineCallbacks
def wait_for_keys(hook, keys, timeout):
    deadline = time.monotonic() + timeout
    while not keys <= set(hook.keys()) and time.monotonic() < deadline:
        yield sleep(0.1)


@defer.inlineCallbacks
def fault_part(router, workdir, keeper, dashboard, churn, seconds, outage):
    hook = WebhookReceiver()
    data_dir = workdir / "fault-data"
    notifiers = [start_notifier(router, workdir, hook.url, data_dir, 30)]
    events = []
    cpu = 0.0
    try:
        yield leading(dashboard)
        keeper.expected.clear()
        began = time.monotonic()
        opened_at = {}
        plan = {10.0: "kill", 15.0: "down", 15.0 + outage / 2: "kill", 15.0 + outage: "up"}
        index = 0
        while True:
            elapsed = time.monotonic() - began
            for at in sorted(plan):
                if elapsed >= at:
                    action = plan.pop(at)
                    events.append((round(elapsed, 1), action, sum(len(body["alerts"]) for _, _, body in hook.messages)))
                    if action == "kill":
                        cpu += cpu_seconds(notifiers[-1])
                        notifiers[-1].kill()
                        notifiers.append(start_notifier(router, workdir, hook.url, data_dir, 30))
                    elif action == "down":
                        yield hook.down()
                    else:
                        hook.up()
            if elapsed < seconds and index < elapsed * churn:
                host = f"churn-{index:05d}"
                index += 1
                yield keeper.fire(host)
                opened_at[next(reversed(keeper.open))] = time.monotonic()
            for alert_id, at in list(opened_at.items()):
                if time.monotonic() - at >= RESOLVE_AFTER:
                    del opened_at[alert_id]
                    yield keeper.resolve(alert_id)
            if elapsed >= seconds and not opened_at and not plan:
                break
            yield sleep(0.02)
        drained_from = time.monotonic()
        yield wait_for_keys(hook, keeper.expected, 120)
        drain = time.monotonic() - drained_from
        cpu += cpu_seconds(notifiers[-1])
    finally:
        for notifier in notifiers:
            notifier.stop()
        yield defer.maybeDeferred(hook.down)
    received = hook.keys()
    counts = {"expected": len(keeper.expected), "received": len(received),
              "lost": len(keeper.expected - set(received)), "duplicates": len(received) - len(set(received)),
              "unexpected": len(set(received) - keeper.expected)}
    return counts, events, drain, cpu


@defer.inlineCallbacks
def run(reactor, args):
    workdir = Path(tempfile.mkdtemp(prefix="nerve-notifier-bench-"))
    router = RouterProcess(workdir).start()
    try:
        session = yield join(router.rawsocket_url, "alerts", "bench-keeper", router.ticket("alerts", "bench-keeper"))
        dashboard = yield join(router.websocket_url)
        keeper = Keeper(session)
        yield session.register(keeper.alerts_open, "nerve.alerts.open")
        rows, latency_cpu = yield latency_part(router, workdir, args.hosts, keeper, dashboard)
        counts, events, drain, fault_cpu = yield fault_part(router, workdir, keeper, dashboard, args.churn,
                                                            args.churn_seconds, args.outage)
    finally:
        router.stop()
    print(f"\n1. record → webhook delivered, group_wait = 0, {args.hosts} simulated hosts (one alert each)")
    widths = (24, 6, 9, 9, 9)
    print("  ".join(title.ljust(width) for title, width in zip(("phase", "n", "p50 ms", "p99 ms", "max ms"), widths)))
    everything = []
    for name, values in rows:
        everything += values
        cells = (name, len(values), f"{percentile(values, 0.5):.0f}", f"{percentile(values, 0.99):.0f}",
                 f"{max(values, default=0):.0f}")
        print("  ".join(str(cell).ljust(width) for cell, width in zip(cells, widths)))
    print(f"notifier CPU: {latency_cpu:.1f} s for {len(everything)} notifications "
          f"({latency_cpu / max(len(everything), 1) * 1000:.2f} ms each)")
    print(f"\n2. {args.churn}/s alerts for {args.churn_seconds} s, each resolved after {RESOLVE_AFTER:g} s; "
          f"faults at (s, what, notifications received so far):")
    for at, action, seen in events:
        what = {"kill": "SIGKILL the notifier, start another", "down": f"webhook down for {args.outage} s",
                "up": "webhook back"}[action]
        print(f"  {at:6.1f}  {what:40} {seen}")
    print("  ".join(name.ljust(10) for name in counts))
    print("  ".join(str(value).ljust(10) for value in counts.values()))
    print(f"everything delivered {drain:.1f} s after the last alert resolved; notifier CPU {fault_cpu:.1f} s")
    paced, burst = rows[0][1], rows[1][1]
    p99 = percentile(paced, 0.99)
    ok = p99 < TARGET_P99_MS and counts["lost"] == 0 and counts["duplicates"] == 0 and counts["unexpected"] == 0
    print(f"summary: {'PASS' if ok else 'FAIL'}; record → webhook p99 {p99:.0f} ms (target < {TARGET_P99_MS} ms), "
          f"p50 {percentile(paced, 0.5):.0f} ms over {len(paced)} alerts of {args.hosts} hosts in 5 s (all "
          f"{len(burst)} resolved at once: p99 {percentile(burst, 0.99):.0f} ms); "
          f"{latency_cpu / max(len(everything), 1) * 1000:.2f} ms notifier CPU each; "
          f"across 2 notifier SIGKILLs and a {args.outage} s webhook outage: {counts['expected']} expected, "
          f"{counts['lost']} lost, {counts['duplicates']} duplicates (targets 0, 0)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000, help="Simulated hosts, one alert each (part 1).")
    parser.add_argument("--churn", type=float, default=10.0, help="New alerts per second (part 2).")
    parser.add_argument("--churn-seconds", type=float, default=80.0, help="How long new alerts come (part 2).")
    parser.add_argument("--outage", type=float, default=60.0, help="Seconds the webhook is down (part 2).")
    args = parser.parse_args()
    print(machine_line(), file=sys.stderr)
    task.react(run, (args,))


if __name__ == "__main__":
    main()
