"""The Prometheus exporter at 1,000 and 5,000 hosts: scrape time, exporter CPU, exposition bytes, router messages.

    .venv/bin/python bench/exporter_bench.py [--hosts 1000,5000] [--scrapes 5] [--ingest-seconds 10]

One router and one `nerve exporter`; this process plays the active orchestrator: it publishes nerve.samples for H
hosts once a second (chunks of 1,000 hosts, 14 metrics each, a level per family and an anomaly score per metric, as
the orchestrator's events carry) and answers nerve.stats. Per fleet size:
- ingest: the exporter's CPU (% of one core) taking the events, with nobody scraping;
- scrape: with the feed paused (the exporter runs with --stale-after 3600 so the hosts stay), `--scrapes` GETs of
  /metrics one after the other with the headers Prometheus sends: wall time, the exporter's CPU seconds per scrape,
  series and bytes of one exposition, and the bytes sent (the same unless the answer is compressed);
- router messages per scrape: what the router counted (nerve.router.stats) over the scrapes, less what it counts over
  as long a time without scrapes, divided by the scrapes. It must be 0: a scrape is served from memory.
CPU seconds and bytes do not depend on the machine's load; wall times do.
"""

import argparse
import gzip
import random
import tempfile
import time
import urllib.request

import psutil
from twisted.internet import defer, task

from common import machine_line, percentile  # noqa: E402 (puts the project on sys.path)
from components.monitor.measure import MEASURE_SCHEMA  # noqa: E402
from components.node.routerctl import free_port  # noqa: E402
from components.testing.live import ComponentProcess, RouterProcess, join, sleep, wait_until  # noqa: E402
from components.testing.prometheus import scraped_series, series_value  # noqa: E402

CHUNK_HOSTS = 1000
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
METRICS = ["cpu", "load1", "load5", "load15", "mem", "swap", "disk_used.root", "disk_read", "disk_write", "net_recv",
           "net_sent", "procs", "cpu_core.0", "cpu_core.1"]
STATS = {"received": 10**6, "analysed": 10**6, "calls": 10**4, "retries": 3, "backpressure": 1, "duplicates": 0,
         "gaps": 2, "alerts": 500, "hosts": 5000, "backlog": 0, "in_flight": 2, "capacity": 16.0, "lag_seconds": 0.1,
         "active": True, "watched_hosts": 0, "dropped": {}, "handler_errors": {},
         "gc": {"count": 100, "seconds": 0.5, "max_seconds": 0.02, "frozen": 10**5},
         "analysis_latency": {"p50_ms": 40.0, "p99_ms": 90.0, "samples": 10000},
         "analysis_latency_histogram": {"edges_ms": [25, 50, 100, 1000], "counts": [100, 600, 250, 45, 5]}}


def samples_events(hosts, now, rng):
    """The nerve.samples events of one second for `hosts` simulated hosts, as the orchestrator publishes them."""
    host_ids = [f"bench-{index:05d}" for index in range(hosts)]
    chunks = [host_ids[start:start + CHUNK_HOSTS] for start in range(0, hosts, CHUNK_HOSTS)]
    families = sorted({name.split(".")[0] for name in METRICS if MEASURE_SCHEMA[name.split(".")[0]].get("max")})
    return [{"ts": now, "orchestrator": "bench", "chunk": index, "chunks": len(chunks),
             "hosts": {host_id: {"hostname": host_id, "run": "bench", "seq": [int(now)], "ts": [now],
                                 "metrics": {name: [round(rng.uniform(0, 100), 2)] for name in METRICS},
                                 "level": "LOW", "levels": {family: "LOW" for family in families},
                                 "anomaly": {name: round(rng.gauss(0, 1), 3) for name in METRICS}}
                       for host_id in chunk}}
            for index, chunk in enumerate(chunks)]


def scrape_as_prometheus(url):
    """GET url with the headers Prometheus 2.x sends (OpenMetrics preferred, gzip); (bytes received, the text)."""
    request = urllib.request.Request(url, headers={"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=120) as response:
        body = response.read()
        compressed = response.headers.get("Content-Encoding") == "gzip"
    return len(body), (gzip.decompress(body) if compressed else body).decode()


def cpu_seconds(process):
    """User + system CPU seconds of a process so far."""
    times = process.cpu_times()
    return times.user + times.system


@defer.inlineCallbacks
def router_messages(observer):
    """Messages the router has received and sent so far."""
    stats = yield observer.call("nerve.router.stats")
    return stats["received_total"] + stats["sent_total"]


@defer.inlineCallbacks
def measure(hosts, args, feed, observer, exporter, url):
    """One row of the table for `hosts` hosts."""
    feed["hosts"] = hosts
    yield wait_until(lambda: series_value(scraped_series(url) or {}, "nerve_exporter_hosts") == hosts, timeout=60,
                     interval=1.0, message=f"{hosts} hosts on /metrics")
    process = psutil.Process(exporter.process.pid)
    yield sleep(2)  # the events after the scrape above
    began, cpu = time.monotonic(), cpu_seconds(process)
    yield sleep(args.ingest_seconds)
    ingest = (cpu_seconds(process) - cpu) / (time.monotonic() - began) * 100
    feed["hosts"] = 0
    yield sleep(1.5)  # the last events delivered
    quiet_before = yield router_messages(observer)
    began = time.monotonic()
    for _ in range(args.scrapes):
        yield sleep(0.2)  # as long as the pauses between the scrapes below, without them
    quiet = (yield router_messages(observer)) - quiet_before
    walls, answers = [], []
    scraped_before = yield router_messages(observer)
    cpu = cpu_seconds(process)
    for _ in range(args.scrapes):
        started = time.monotonic()
        answers.append(scrape_as_prometheus(url))
        walls.append(time.monotonic() - started)
        yield sleep(0.2)
    cpu_per_scrape = (cpu_seconds(process) - cpu) / args.scrapes
    scraped = (yield router_messages(observer)) - scraped_before
    wire, text = answers[-1]
    return {"hosts": hosts, "ingest": ingest, "p50": percentile(walls, 0.5), "max": max(walls), "cpu": cpu_per_scrape,
            "bytes": len(text.encode()), "wire": wire, "messages": (scraped - quiet) / args.scrapes,
            "series": sum(1 for line in text.splitlines() if line and line[0] != "#") - 1,  # less OpenMetrics' # EOF
            "rss": process.memory_info().rss / 2**20}


@defer.inlineCallbacks
def main(reactor, args):
    router = RouterProcess(tempfile.mkdtemp(prefix="nerve-exporter-bench-")).start()
    port = free_port()
    exporter = ComponentProcess(router, "exporter", "--port", str(port), "--stale-after", "3600", "--stats-every", "300")
    url = f"http://127.0.0.1:{port}/metrics"
    rows, rng, feed = [], random.Random(1), {"hosts": 0}
    try:
        publisher = yield join(router.rawsocket_url, "orchestrator", "bench-orchestrator",
                               router.ticket("orchestrator", "bench-orchestrator"), serializers=("msgpack",))
        yield publisher.register(lambda: STATS, "nerve.stats")
        observer = yield join(router.rawsocket_url, "operator", "bench-observer", router.ticket("operator", "bench-observer"))

        def publish():
            for event in samples_events(feed["hosts"], time.time(), rng) if feed["hosts"] else ():
                publisher.publish("nerve.samples", event)

        publishing = task.LoopingCall(publish)
        publishing.start(1.0)
        for hosts in args.hosts:
            rows.append((yield measure(hosts, args, feed, observer, exporter, url)))
        publishing.stop()
    finally:
        exporter.stop()
        router.stop()
    print(machine_line() + "; timings are inflated by whatever else runs on it, CPU seconds and bytes are not")
    print(f"{'hosts':>6} {'ingest CPU %':>12} {'scrape p50 s':>12} {'scrape max s':>12} {'CPU s/scrape':>12} "
          f"{'bytes':>11} {'bytes sent':>11} {'series':>8} {'router msgs/scrape':>18} {'RSS MB':>7}")
    for row in rows:
        print(f"{row['hosts']:>6} {row['ingest']:>12.1f} {row['p50']:>12.3f} {row['max']:>12.3f} {row['cpu']:>12.3f} "
              f"{row['bytes']:>11,} {row['wire']:>11,} {row['series']:>8,} {row['messages']:>18.1f} {row['rss']:>7.0f}")
    last = rows[-1]
    print(f"summary: at {last['hosts']:,} hosts a scrape costs the exporter {last['cpu']:.2f} CPU s ({last['p50']:.2f} s "
          f"wall) for {last['series']:,} series, {last['bytes'] / 2**20:.1f} MiB ({last['wire'] / 2**20:.1f} MiB sent); "
          f"ingest {last['ingest']:.1f} % of a core; router messages per scrape {last['messages']:.1f} "
          f"(per host {last['messages'] / last['hosts']:.4f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=lambda text: [int(h) for h in text.split(",")], default=[1000, 5000])
    parser.add_argument("--scrapes", type=int, default=5)
    parser.add_argument("--ingest-seconds", type=float, default=10.0)
    task.react(main, (parser.parse_args(),))
