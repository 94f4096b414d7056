"""What the benchmark scripts share: percentiles, CPU/RSS meters, router rates, dashboards and a flood."""

import os
import signal
import subprocess
import sys
import time

import psutil
from twisted.internet import defer

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, PROJECT)

from components.testing.live import sleep  # noqa: E402


def percentile(values, fraction):
    """Nearest-rank percentile (NaN for no values)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


class CpuMeter:
    """CPU % of one core and RSS of a process and its children over a measured span."""

    def __init__(self, name, pid, children=True):
        self.name = name
        root = psutil.Process(pid)
        self.processes = [root] + (root.children(recursive=True) if children else [])

    def _cpu(self):
        total = 0.0
        for process in self.processes:
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def begin(self):
        """Start the span."""
        self.start_cpu, self.start_wall = self._cpu(), time.monotonic()

    def end(self):
        """(CPU % of one core over the span, RSS in MB now)."""
        cpu = (self._cpu() - self.start_cpu) / (time.monotonic() - self.start_wall) * 100
        rss = sum(process.memory_info().rss for process in self.processes if process.is_running()) / 2**20
        return cpu, rss


def histogram_percentile(before, after, fraction):
    """The upper edge (ms) of the bucket holding `fraction` of what a cumulative {edges_ms, counts} histogram
    counted between two readings (inf past the last edge, NaN when nothing was counted or there is no histogram)."""
    if not before or not after:
        return float("nan")
    counts = [later - earlier for earlier, later in zip(before["counts"], after["counts"])]
    total, seen = sum(counts), 0
    for edge, count in zip(list(after["edges_ms"]) + [float("inf")], counts):
        seen += count
        if total and seen >= fraction * total:
            return float(edge)
    return float("nan")


def busy_share(before, after):
    """Share of all cores' time that was busy between two psutil.cpu_times() readings (time stolen counts as busy)."""
    idle = (after.idle + getattr(after, "iowait", 0)) - (before.idle + getattr(before, "iowait", 0))
    total = sum(after) - sum(before)
    return 1 - idle / total if total else float("nan")


def stolen_share(before, after):
    """Share of all cores' time the hypervisor gave to other guests between two psutil.cpu_times() readings.

    On a shared VM this comes in bursts (15-25 % of both cores for seconds at a time, seen in vmstat
    during pipeline runs); the processes then fall behind without being busy themselves.
    """
    total = sum(after) - sum(before)
    return (getattr(after, "steal", 0.0) - getattr(before, "steal", 0.0)) / total if total else float("nan")


def scheduler_seconds(process):
    """(seconds on a CPU, seconds runnable but waiting for one) of a psutil process's main thread, from Linux's
    /proc/<pid>/schedstat: the wait says how much a saturated machine held the process back."""
    with open(f"/proc/{process.pid}/schedstat") as stat:
        on_cpu, waiting, _ = stat.read().split()
    return int(on_cpu) / 1e9, int(waiting) / 1e9


class OutsideMeter:
    """CPU of the processes outside this one's tree over a span, as % of one core: a mesh left behind by another
    run, or a build, takes cores from everything measured, so a run says how much it had to share."""

    def __init__(self):
        self.started, self.before = time.monotonic(), self._read()

    @staticmethod
    def _read():
        ours = {os.getpid()} | {child.pid for child in psutil.Process().children(recursive=True)}
        seconds = {}
        for process in psutil.process_iter(["cpu_times"]):
            times = process.info["cpu_times"]
            if process.pid not in ours and times is not None:
                seconds[process.pid] = times.user + times.system
        return seconds

    def share(self):
        """% of one core the outside processes used since the meter started (one that started since counts whole)."""
        after = self._read()
        used = sum(seconds - self.before.get(pid, 0.0) for pid, seconds in after.items())
        return 100 * used / (time.monotonic() - self.started)


def interrupt_on_sigterm():
    """Make SIGTERM (`timeout`, a CI job's end) an interrupt of the main thread: the run then leaves through the
    finally blocks that stop its router and components, instead of leaving a mesh behind that skews the next run."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def machine_line():
    """One line saying what machine the figures come from."""
    return f"machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, Python {sys.version.split()[0]}"


CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
DASHBOARD_SCRIPT = """
import sys, time
from playwright.sync_api import sync_playwright
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=%r)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(sys.argv[1])
    time.sleep(float(sys.argv[2]))
    browser.close()
""" % (CHROMIUM_FLAGS,)


def open_dashboards(url, count, seconds):
    """Start `count` headless Chromium pages on the dashboard at url for `seconds`; returns their Popen objects."""
    return [subprocess.Popen([sys.executable, "-c", DASHBOARD_SCRIPT, url, str(seconds)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(count)]


def router_rates(before, after):
    """(router messages per second, router worker CPU % of one core) between two nerve.router.stats answers."""
    wall = after["now"] - before["now"]
    messages = after["received_total"] + after["sent_total"] - before["received_total"] - before["sent_total"]
    return messages / wall, (after["cpu_seconds"] - before["cpu_seconds"]) / wall * 100


@defer.inlineCallbacks
def flood(publisher, subscriber, topic, events):
    """Delivered events/s when publisher sends `events` ~80-byte events to topic as fast as it can, to subscriber."""
    received, done = [0], defer.Deferred()

    def on_event(*args, **kwargs):
        received[0] += 1
        if received[0] == events:
            done.callback(time.monotonic())

    yield subscriber.subscribe(on_event, topic)
    started = time.monotonic()
    payload = {"host": topic.rsplit(".", 1)[-1], "ts": 0.0, "cpu": 12.5, "mem": 40.1, "seq": 0}
    for seq in range(events):
        payload["seq"] = seq
        publisher.publish(topic, payload)
        if seq % 500 == 0:
            yield sleep(0)  # let the reactor write and read
    finished = yield done
    return events / (finished - started)
