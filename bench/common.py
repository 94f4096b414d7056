"""What the benchmark scripts share: percentiles and per-process CPU/RSS meters."""

import os
import sys
import time

import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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


def machine_line():
    """One line saying what machine the figures come from."""
    return f"machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, Python {sys.version.split()[0]}"
