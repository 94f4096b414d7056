"""`nerve recorder`: keeps every measurement of every host in the history store and answers range queries.

It subscribes to nerve.samples (the orchestrator's batch of the last second's measurements), so
recording costs the router one event per second per 500 hosts. It commits once a second (a
SIGKILL loses at most that second), fills the gap after a restart from the orchestrator's window
(nerve.samples.since), keeps the mesh's traffic going when the disk is full and resumes writing
when space returns.
"""

import shutil
import sqlite3
import time
from dataclasses import dataclass

from twisted.internet import defer
from twisted.logger import Logger

from components.history.store import is_disk_full
from components.history.tiers import DEFAULT_TIERS
from components.mesh.config import MeshConfig
from components.mesh.decorators import every, on, on_join, on_stop, procedure
from components.mesh.errors import ConfigError, InvalidArgument, NotFound, Unavailable
from components.monitor.measure import HOST_ID_PATTERN, finite_number
from components.monitor.samples import SAMPLES_TOPIC

log = Logger(namespace="nerve.recorder")

RANGE_URI = "nerve.history.range"
STATS_URI = "nerve.recorder.stats"
STATE_TOPIC = "nerve.recorder.state"  # retained: the dashboard's mesh panel shows the latest at once
STATE_EVERY = 30.0  # seconds between state events when nothing changes (disk free and sizes move)
SAMPLES_SINCE_URI = "nerve.samples.since"
MAX_POINTS = 100_000  # points of one range answer
AUTO_POINTS = 2_000  # step=None picks the finest tier whose points fit in this
MAINTENANCE_EVERY = 30.0  # seconds between rollups and retention passes
GAP_OVERLAP = 10.0  # seconds before the last recorded sample a gap fill asks from (hosts report a little apart)
STATES = ("starting", "filling gap", "waiting for samples", "recording", "disk full", "write error")


@dataclass(frozen=True)
class RecorderConfig:
    """Recorder settings: where the store lives, its tiers (ages) and disk budget, how often it commits."""

    mesh: MeshConfig
    data_dir: str = ".nerve"
    tiers: tuple = DEFAULT_TIERS
    max_disk: int = 2 * 10**9
    commit_every: float = 1.0

    def __post_init__(self):
        if self.max_disk < 1_000_000:
            raise ConfigError(f"max disk must be at least 1MB, got {self.max_disk} bytes")
        if not 0.05 <= self.commit_every <= 10:
            raise ConfigError(f"commit every must be 0.05 to 10 seconds, got {self.commit_every}")


def checked_entries(hosts, where):
    """The host entries of a nerve.samples event or nerve.samples.since page, or InvalidArgument naming the field.

    Only the shape is checked here; the store checks every value and skips (and counts) a malformed host entry."""
    if not isinstance(hosts, dict):
        raise InvalidArgument(f"{where}.hosts must be an object of host entries")
    for host_id, entry in hosts.items():
        if not isinstance(host_id, str) or not HOST_ID_PATTERN.match(host_id):
            raise InvalidArgument(f"{where}.hosts has a host id that is not [a-z0-9_-]{{1,64}}: {host_id!r:.70}")
        if not isinstance(entry, dict):
            raise InvalidArgument(f"{where}.hosts.{host_id} must be an object with ts and metrics")
    return hosts


class Recorder:
    """Records nerve.samples into the store; serves nerve.history.range and nerve.recorder.stats."""

    def __init__(self, config, mesh, store, clock=time.time):
        self.config, self.mesh, self.store, self.clock = config, mesh, store, clock
        self.state, self.last_error = "starting", None
        self.counts = {"events": 0, "samples": 0, "gap_filled": 0, "write_errors": 0}
        self.next_maintenance = 0.0

    # -- input --------------------------------------------------------------------------
    @on(SAMPLES_TOPIC)
    def on_samples(self, event):
        """Take one nerve.samples event (after the join's gap fill: fill_gap holds them)."""
        if not isinstance(event, dict):
            raise InvalidArgument("a nerve.samples event must be an object")
        self.counts["events"] += 1
        self._ingest(checked_entries(event.get("hosts"), "event"))

    def _ingest(self, hosts):
        self.counts["samples"] += self.store.ingest(hosts)
        if self.state == "waiting for samples":
            self._set_state("recording")

    def _set_state(self, state):
        if state != self.state:
            self.state = state
            self.publish_state()

    @every(STATE_EVERY)
    def publish_state(self):
        """Publish the state, the last error, sizes and disk free on nerve.recorder.state (retained)."""
        self.mesh.publish(STATE_TOPIC, self.state_summary(), retain=True)

    def state_summary(self):
        """{state, last_error, samples, bytes, max_disk, disk_free, ts}: what the mesh panel shows."""
        try:
            free = shutil.disk_usage(self.config.data_dir).free
        except OSError:
            free = None
        return {"state": self.state, "last_error": self.last_error, "samples": self.store.samples[0],
                "bytes": sum(self.store.bytes), "max_disk": self.config.max_disk, "disk_free": free,
                "ts": round(self.clock(), 3)}

    # Events wait until the fill has ended: one taken first would move the hosts' last sample past the gap, and
    # the store skips what is older than that.
    @on_join(hold_events=True)
    @defer.inlineCallbacks
    def fill_gap(self):
        """Ask the orchestrator for what it holds since the last recorded sample, page by page, then go live."""
        self._set_state("filling gap")
        recorded = [host.last_ts for host in self.store.hosts.values() if host.last_ts > 0]
        since = max(recorded) - GAP_OVERLAP if recorded else 0.0
        after, filled = None, 0
        try:
            while True:
                page = yield self.mesh.call(SAMPLES_SINCE_URI, since, after=after, timeout=30)
                filled += self.store.ingest(checked_entries(page.get("hosts"), "page"))
                after = page.get("next")
                if after is None:
                    break
        except Exception as error:  # no orchestrator yet, or an older one: record from now on
            log.warn("cannot fill the gap since {since:.0f} from {uri} ({error}); recording from now on",
                     since=since, uri=SAMPLES_SINCE_URI, error=error)
        self.counts["gap_filled"] += filled
        if self.state == "filling gap":
            self._set_state("recording" if self.counts["samples"] or filled else "waiting for samples")
        if filled:
            log.info("filled the gap with {count} samples from the orchestrator", count=filled)

    # -- writing ------------------------------------------------------------------------
    @every(lambda config: config.commit_every, offline=True)
    def commit(self, maintain=True):
        """Commit the last second (and closed blocks); with maintain, roll up and apply retention every
        MAINTENANCE_EVERY seconds."""
        store = self.store
        try:
            store.close_idle()
            store.commit()
            now = self.clock()
            if maintain and now >= self.next_maintenance:
                self.next_maintenance = now + MAINTENANCE_EVERY
                store.roll_up()
                store.commit()
                store.enforce_retention()
        except sqlite3.DatabaseError as error:  # disk full, a locked or damaged file: nothing leaves memory
            self._write_failed(error)
            return
        if self.state in ("disk full", "write error"):
            log.info("writing again: the store is recording ({error} is over)", error=self.last_error["message"])
            self._set_state("recording")

    @on_stop
    def stop(self):
        """Commit what memory holds and close the store, so a stop (SIGINT, SIGTERM) loses no sample."""
        # Maintenance can wait for the next start; a failure is logged, and that start's gap fill asks the
        # orchestrator for what it missed.
        self.commit(maintain=False)
        self.store.close()

    def _write_failed(self, error):
        state = "disk full" if is_disk_full(error) else "write error"
        self.counts["write_errors"] += 1
        self.last_error = {"ts": round(self.clock(), 3), "message": f"{self.store.path}: {error}"}
        if state != self.state:
            log.error("cannot write the history store {path} ({error}): the mesh runs on and samples wait in memory; "
                      "recording resumes by itself when it can write again", path=self.store.path, error=error)
        self._set_state(state)

    # -- queries ------------------------------------------------------------------------
    @procedure(RANGE_URI)
    def history_range(self, host_id, since, until=None, step=None):
        """A host's recorded points between since and until (epoch s) at `step` seconds (None: the finest tier whose
        points fit in 2,000): {host_id, hostname, step, ts, series: {metric: [mean]}, and min/max for coarse steps}."""
        if not isinstance(host_id, str):
            raise InvalidArgument(f"host_id must be a string, got {type(host_id).__name__}")
        if host_id not in self.store.hosts:
            if self.state == "filling gap":
                raise Unavailable(f"the recorder is filling its gap from the orchestrator and has no '{host_id:.64}' "
                                  f"yet; ask again in a moment (nerve.recorder.state says when it records)")
            raise NotFound(f"no host '{host_id:.64}' is recorded; nerve.snapshot lists the hosts reporting now")
        now = self.clock()
        until = now if until is None else until
        for name, value in (("since", since), ("until", until)):
            if not finite_number(value):
                raise InvalidArgument(f"{name} must be epoch seconds (a number), got {value!r:.40}")
        if since >= until:
            raise InvalidArgument(f"since ({since}) must be before until ({until})")
        tiers = self.config.tiers
        steps = [tier.step for tier in tiers]
        if step is None:
            fitting = [index for index, tier in enumerate(tiers)
                       if (until - since) / tier.step <= AUTO_POINTS and since >= now - tier.keep]
            tier = fitting[0] if fitting else len(tiers) - 1
        elif step in steps and not isinstance(step, bool):
            tier = steps.index(step)
        else:
            raise InvalidArgument(f"step must be one of {', '.join(map(str, steps))} seconds, or null for the finest "
                                  f"whose points fit in {AUTO_POINTS:,}; got {step!r:.40}")
        points = (until - since) / steps[tier]
        if points > MAX_POINTS:
            raise InvalidArgument(f"since..until at step {steps[tier]} s is {points:,.0f} points, more than "
                                  f"{MAX_POINTS:,}: ask a shorter range or a coarser step")
        return self.store.range(host_id, since, until, tier)

    @procedure(STATS_URI)
    def recorder_stats(self):
        """State ("recording", "disk full", ...), samples and bytes per tier, disk free, last error, counters."""
        summary = self.state_summary()
        return dict(self.store.stats(), state=self.state, last_error=self.last_error, disk_free=summary["disk_free"],
                    file=self.store.path, max_disk=self.config.max_disk, received=dict(self.counts), ts=summary["ts"])
