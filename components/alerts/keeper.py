"""`nerve alerts`: the alert keeper. Turns level events into alert records, keeps acks and silences on disk, and
says when a tracker's host is DOWN, OFFLINE or rebooted.

Several keepers may run. All register KEEPER_LEADER_URI with invoke='first' and the one the router routes that
call to is active: it alone applies events, publishes records and host events and answers acks and silences.
Standbys follow the active keeper's published records and silences into their own store, so the one that takes
over knows every acknowledgement and silence even on another machine; read-only procedures they answer from
that copy, changes they refuse with nerve.error.unavailable (the router routes every procedure of a keeper that
registered first to it, so only a keeper joining in the same instant as another can be asked).
"""

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer
from twisted.logger import Logger

from components.alerts.lifecycle import BOOT_METRIC, HOST_METRIC, MAX_RESOLVED_KEPT, AlertBook
from components.mesh.config import MeshConfig
from components.mesh.decorators import every, on, on_join, on_stop, procedure
from components.mesh.errors import ConfigError, InvalidArgument, Unavailable
from components.mesh.leadership import routed_to_me
from components.monitor.measure import HOST_ID_PATTERN, MEASURE_TOPIC_PREFIX, SILENCE_TOPIC, SILENT_URI, finite_number

log = Logger(namespace="nerve.alerts")

KEEPER_LEADER_URI = "nerve.alerts.leader"
ALERT_TOPIC_PREFIX = "nerve.alert."
ALERTS_CHANGED_TOPIC = "nerve.alerts.changed"
SILENCES_CHANGED_TOPIC = "nerve.silences.changed"
MESH_SESSIONS_URI = "nerve.mesh.sessions"
TRACKER_ROLE = "tracker"
BOOT_TOLERANCE_SECONDS = 5.0  # a boot time read again may move by a second or two (clock adjustments); a reboot moves it more


@dataclass(frozen=True)
class KeeperConfig:
    """Alert keeper settings: where its store lives, how long a reboot alert fires, how often it writes and ticks."""

    mesh: MeshConfig
    data_dir: Path = Path(".nerve")
    reboot_hold: float = 600.0
    flush_interval: float = 0.2

    def __post_init__(self):
        for name in ("reboot_hold", "flush_interval"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name.replace('_', ' ')} must be > 0 seconds, got {getattr(self, name)}")


def _caller(details):
    """Who made a call: the authid the router discloses for operators."""
    return getattr(details, "caller_authid", None) or "unknown"


class AlertKeeper:
    """Alert records from level events and host presence; acks and silences; one active keeper among several."""

    def __init__(self, config, mesh, clock=time.time, store=None):
        from components.alerts.store import AlertStore

        self.config = config
        self.mesh = mesh
        self.clock = clock
        self.store = store or AlertStore(config.data_dir)
        self.book = AlertBook()
        records, silences, hosts = self.store.load(clock(), MAX_RESOLVED_KEPT)
        for record in records:
            self.book.put_alert(record)
        for silence in silences:
            self.book.put_silence(silence)
        self.boot_times = {host_id: boot for host_id, (boot, _) in hosts.items() if boot is not None}
        self.presence = {host_id: presence for host_id, (_, presence) in hosts.items() if presence}
        self.trackers = {}  # host id -> ids of its tracker sessions now
        self.silent = set()  # hosts DOWN because they went silent while their tracker's session stayed open
        self.boot_watches = set()  # hosts whose first measurement after a join is awaited
        self.active = False
        self.loaded = False  # silent hosts and tracker sessions read since the last join: it may take over
        self.stats = Counter()

    # -- publishing ----------------------------------------------------------------------------------------------
    def _emit(self, records=(), silences=()):
        for silence in silences:
            self.store.save_silence(silence)
            self.mesh.publish(SILENCES_CHANGED_TOPIC, silence)
        for record in records:
            self.store.save_alert(record)
            self.mesh.publish(ALERTS_CHANGED_TOPIC, record)
            self.stats["changes"] += 1

    def host_event(self, host_id, metric, level, previous, value=None):
        """Publish a host's own alert event (DOWN, OFFLINE, UP, REBOOT) on nerve.alert.<host> and apply it."""
        now = self.clock()
        event = {"host_id": host_id, "hostname": host_id, "metric": metric, "previous": previous, "level": level,
                 "value": value, "ts": round(now, 3), "seq": None}
        self.mesh.publish(ALERT_TOPIC_PREFIX + host_id, event)
        self._emit(self.book.apply_event(event, now))

    # -- level events ----------------------------------------------------------------------------------------------
    @on(ALERT_TOPIC_PREFIX, match="prefix")
    def on_alert(self, event):
        """A level change of one metric of one host (the orchestrator's, or another keeper's host event)."""
        if self.active:
            self._emit(self.book.apply_event(event, self.clock()))

    @on(ALERTS_CHANGED_TOPIC)
    def follow_record(self, record):
        """As a standby, keep the active keeper's records."""
        if self.active:
            return
        if not isinstance(record, dict) or not all(isinstance(record.get(key), str) for key in ("id", "host_id", "metric", "status")):
            raise InvalidArgument(f"alert record must carry id, host_id, metric and status, got {record!r:.120}")
        self.book.put_alert(record)
        self.store.save_alert(record)

    @on(SILENCES_CHANGED_TOPIC)
    def follow_silence(self, silence):
        """As a standby, keep the active keeper's silences."""
        if self.active:
            return
        if not isinstance(silence, dict) or not isinstance(silence.get("id"), str) or not isinstance(silence.get("matchers"), dict):
            raise InvalidArgument(f"silence must carry id and matchers, got {silence!r:.120}")
        self.book.put_silence(silence)
        self.store.save_silence(silence)

    # -- host presence ---------------------------------------------------------------------------------------------
    @on("nerve.mesh.joined")
    def on_session_joined(self, info):
        """A tracker joined: its host is up again; its first measurement tells whether it rebooted."""
        host_id = self._tracker_host(info)
        if host_id is None:
            return
        self.trackers.setdefault(host_id, set()).add(info.get("session"))
        self.silent.discard(host_id)
        self._set_presence(host_id, "UP")
        self.watch_boot(host_id)

    @on("nerve.mesh.left")
    def on_session_left(self, info):
        """A tracker left: its host is OFFLINE if it said goodbye, DOWN if its session was lost."""
        host_id = self._tracker_host(info)
        if host_id is None:
            return
        sessions = self.trackers.get(host_id, set())
        sessions.discard(info.get("session"))
        if sessions:
            return  # another tracker session of the host is still there
        self.trackers.pop(host_id, None)
        self.silent.discard(host_id)
        self._set_presence(host_id, "OFFLINE" if info.get("goodbye") is True else "DOWN")

    @on(SILENCE_TOPIC)
    def on_silence(self, event):
        """The orchestrator's silent and heard-again hosts: a silent host whose tracker's session is still open is
        DOWN (a hung tracker, or a machine or network that died without closing its connection), UP once heard."""
        if not isinstance(event, dict) or not all(isinstance(event.get(key, []), list) for key in ("silent", "heard")):
            raise InvalidArgument(f"a silence event must carry the lists silent and heard, got {event!r:.120}")
        for host_id in event.get("silent", []):
            # A simulator's hosts have no session of their own: they only go stale.
            if isinstance(host_id, str) and host_id in self.trackers:
                self.silent.add(host_id)
                self._set_presence(host_id, "DOWN")
        for host_id in event.get("heard", []):
            # DOWN with its tracker's session open: DOWN for its silence (also when this keeper restarted since).
            if isinstance(host_id, str) and host_id in self.trackers and self.presence.get(host_id) == "DOWN":
                self.silent.discard(host_id)
                self._set_presence(host_id, "UP")

    @staticmethod
    def _tracker_host(info):
        if not isinstance(info, dict) or info.get("authrole") != TRACKER_ROLE:
            return None
        host_id = info.get("authid")
        if not isinstance(host_id, str) or not HOST_ID_PATTERN.match(host_id):
            raise InvalidArgument(f"tracker session event with authid {host_id!r:.70}, not a host id")
        return host_id

    def _set_presence(self, host_id, presence):
        previous = self.presence.get(host_id, "UP")
        if presence == previous:
            return
        self.presence[host_id] = presence
        self.store.save_host(host_id, presence=presence)
        if self.active:
            self.host_event(host_id, HOST_METRIC, presence, previous)

    def watch_boot(self, host_id):
        """Read the boot time of the host's next measurement (one event per tracker join, then unsubscribed)."""
        session = self.mesh.session
        if session is None or host_id in self.boot_watches:
            return None
        self.boot_watches.add(host_id)
        subscription = []

        def first_measurement(event, *args, **kwargs):
            if not subscription or not subscription[0].active:
                return
            subscription[0].unsubscribe().addErrback(lambda failure: None)
            self.boot_watches.discard(host_id)
            if isinstance(event, dict):
                self.observe_boot(host_id, event.get("boot_time"))

        def subscribed(result):
            subscription.append(result)

        def failed(failure):
            self.boot_watches.discard(host_id)
            log.warn("cannot follow {host}'s boot time: {error}", host=host_id, error=failure.getErrorMessage())

        return session.subscribe(first_measurement, MEASURE_TOPIC_PREFIX + host_id).addCallbacks(subscribed, failed)

    def observe_boot(self, host_id, boot_time):
        """A host's boot time as its tracker measured it: a REBOOT alert when it moved since the last one seen."""
        if not isinstance(boot_time, (int, float)) or isinstance(boot_time, bool):
            return
        self.stats["boot_times_read"] += 1
        previous = self.boot_times.get(host_id)
        self.boot_times[host_id] = boot_time
        if previous == boot_time:
            return
        self.store.save_host(host_id, boot_time=boot_time)
        if previous is not None and abs(boot_time - previous) > BOOT_TOLERANCE_SECONDS and self.active:
            self.host_event(host_id, BOOT_METRIC, "REBOOT", None, value=boot_time)

    # -- time ------------------------------------------------------------------------------------------------------
    @every(lambda config: config.flush_interval, now=False)
    def tick(self):
        """Start and end silences, resolve reboot alerts after the hold, and make the writes so far durable."""
        if self.active:
            now = self.clock()
            silences, records = self.book.tick(now)
            self._emit(records, silences)
            for record in list(self.book.alerts.values()):
                if record["metric"] == BOOT_METRIC and record["opened_at"] + self.config.reboot_hold <= now:
                    self.host_event(record["host_id"], BOOT_METRIC, "UP", "REBOOT")
        self.store.commit()

    @on_stop
    def make_durable(self):
        """Commit the writes since the last tick, so a stop (SIGINT, SIGTERM) loses no alert or presence."""
        self.store.commit()

    # -- leadership ------------------------------------------------------------------------------------------------
    @procedure(KEEPER_LEADER_URI, invoke="first")
    def leader(self):
        """The session id of the keeper the router routes to first: the active one."""
        return self.mesh.session.session_id

    @on_join
    @defer.inlineCallbacks
    def rejoined(self):
        """After every (re)join: standby until the router says otherwise; learn which hosts are silent and which
        trackers are connected, then which keeper is active."""
        self.active = self.loaded = False
        self.boot_watches.clear()  # the subscriptions of the last session are gone with it
        try:
            yield self.load_silent()
            yield self.load_trackers()
        finally:
            self.loaded = True
        yield self.check_leadership()

    @defer.inlineCallbacks
    def load_silent(self):
        """Ask the orchestrator which hosts are silent now, so a keeper (re)started meanwhile keeps them DOWN."""
        try:
            answer = yield self.mesh.call(SILENT_URI, timeout=5)
        except ApplicationError as error:
            # No orchestrator yet: one that starts later reports silence from then on, so nothing is lost.
            if error.error != ApplicationError.NO_SUCH_PROCEDURE:
                log.warn("cannot ask the orchestrator for its silent hosts ({error}); silence follows its events only",
                         error=error.error_message())
            return
        except defer.CancelledError:
            log.warn("the orchestrator did not say within 5 s which hosts are silent; silence follows its events only")
            return
        silent = answer.get("silent") if isinstance(answer, dict) else None
        if isinstance(silent, list):
            self.silent |= {host_id for host_id in silent if isinstance(host_id, str)}

    @defer.inlineCallbacks
    def load_trackers(self):
        """Read the tracker sessions there are now (a keeper starting after them has not seen them join); a silent
        host whose tracker's session is open stays DOWN."""
        try:
            listing = yield self.mesh.call(MESH_SESSIONS_URI, timeout=5)
        except (ApplicationError, defer.CancelledError) as error:
            log.warn("cannot list the mesh's sessions ({error}); host presence follows joins and leaves only", error=error)
            return
        self.trackers = {}
        for info in listing.get("sessions", []):
            host_id = self._tracker_host(info)
            if host_id in self.silent:
                self.trackers.setdefault(host_id, set()).add(info.get("session"))
                self._set_presence(host_id, "DOWN")
            else:
                self.on_session_joined(info)
        self.silent &= set(self.trackers)  # a silent host whose tracker left is DOWN or OFFLINE for that instead

    @every(0.5, now=False)
    @defer.inlineCallbacks
    def check_leadership(self):
        """Ask the router which keeper is first; become active or standby accordingly (once the join's reads are in:
        taking over reconciles alerts with them)."""
        if not self.loaded:
            return
        active = yield routed_to_me(self.mesh, KEEPER_LEADER_URI)
        if active is None or active == self.active:
            return
        self.active = active
        self.stats["takeovers" if active else "standby"] += 1
        log.info("this alert keeper is now {state}", state="active" if active else "a standby")
        if active:
            self.reconcile_hosts()

    def reconcile_hosts(self):
        """On taking over: a host alert still open for a host whose tracker is connected again (and not silent) is
        resolved, and a host that left or fell silent while this keeper was a standby gets its alert."""
        for record in list(self.book.alerts.values()):
            host_id = record["host_id"]
            if record["metric"] == HOST_METRIC and host_id in self.trackers and host_id not in self.silent:
                self.host_event(host_id, HOST_METRIC, "UP", record["level"])
        for host_id, presence in list(self.presence.items()):
            if (presence == "DOWN" and self.book.open_of(host_id, HOST_METRIC) is None
                    and (host_id not in self.trackers or host_id in self.silent)):
                self.host_event(host_id, HOST_METRIC, "DOWN", "UP")

    def _require_active(self):
        if not self.active:
            raise Unavailable("this alert keeper is a standby (another one just joined first); try again in a second")

    # -- procedures ------------------------------------------------------------------------------------------------
    @procedure("nerve.alerts.open", invoke="first")
    def alerts_open(self, since=None):
        """Every alert not resolved, newest first, the pending and active silences and the hosts OFFLINE now; with
        `since` (epoch s), also `resolved`: the alerts resolved since then (so a notifier that was away learns what
        opened and closed)."""
        # OFFLINE opens no alert, so without the list an orchestrator that joins later would not know those hosts.
        offline = sorted(host_id for host_id, presence in self.presence.items() if presence == "OFFLINE")
        answer = {"alerts": self.book.open_alerts(), "silences": self.book.current_silences(), "offline": offline}
        if since is not None:
            if not finite_number(since):
                raise InvalidArgument(f"since must be epoch seconds (a number) or null, got {since!r:.40}")
            answer["resolved"] = self.book.resolved_since(since)
        return answer

    @procedure("nerve.alert.ack", invoke="first")
    def ack(self, alert_id, comment="", details=None):
        """Acknowledge an open alert as the caller: it stays firing, notifications stop repeating."""
        self._require_active()
        record = self.book.ack(alert_id, _caller(details), comment, self.clock())
        self._emit([record])
        self.store.commit()
        return record

    @procedure("nerve.silence.create", invoke="first")
    def silence_create(self, matchers, duration=None, until=None, starts=None, comment="", details=None):
        """Silence the alerts matching {host: glob, metric: family} for a duration, until a time, or until they
        resolve (neither given); `starts` later makes a maintenance window."""
        self._require_active()
        silence, records = self.book.create_silence(matchers, _caller(details), self.clock(), duration=duration,
                                                    until=until, starts=starts, comment=comment)
        self._emit(records, [silence])
        self.store.commit()
        return silence

    @procedure("nerve.silence.list", invoke="first")
    def silence_list(self):
        """The pending and active silences."""
        return {"silences": self.book.current_silences()}

    @procedure("nerve.silence.expire", invoke="first")
    def silence_expire(self, silence_id):
        """End a silence now."""
        self._require_active()
        silence, records = self.book.expire_silence(silence_id, self.clock())
        self._emit(records, [silence])
        self.store.commit()
        return silence

    @procedure("nerve.alerts.stats", invoke="first")
    def keeper_stats(self):
        """Counters of this keeper: whether it is active, open alerts, silences, changes published, dropped input."""
        return dict(self.stats, active=self.active, open=len(self.book.alerts), silences=len(self.book.current_silences()),
                    trackers=len(self.trackers), dropped=dict(self.mesh.dropped), handler_errors=dict(self.mesh.errors))
