"""The alert lifecycle as plain data: episodes of (host, metric), acknowledgements, silences and their matching.

No I/O here: `AlertBook` takes level events, acks and silence requests with the time passed in, and returns the
records that changed; the keeper (keeper.py) stores and publishes them. Record and silence fields are the ones
of docs/alerts.md (`ALERT_FIELDS`, `SILENCE_FIELDS`).
"""

import fnmatch
import re
import uuid
from collections import OrderedDict

from components.mesh.errors import InvalidArgument, NotFound
from components.monitor.measure import HOST_ID_PATTERN, family_of, finite_number

HOST_METRIC = "host"  # the host itself: DOWN (session lost), OFFLINE (said goodbye), UP (back)
BOOT_METRIC = "boot"  # a reboot: REBOOT, then UP once the keeper's reboot hold is over
# Levels that open (or keep open) an episode, and levels that end it.
FIRING_LEVELS = ("MEDIUM", "HIGH", "DOWN", "REBOOT")
RESOLVING_LEVELS = ("LOW", "UP", "OFFLINE")
LEVELS = FIRING_LEVELS + RESOLVING_LEVELS
STATES = ("firing", "acknowledged", "silenced", "resolved")
SILENCE_STATES = ("pending", "active", "expired")
MATCHER_KEYS = ("host", "metric")
MAX_COMMENT = 1000
MAX_MATCHER = 128
MAX_RESOLVED_KEPT = 5000  # resolved records kept in memory, so a late ack names the alert as resolved, not unknown
MAX_SILENCE_SECONDS = 366 * 24 * 3600.0
METRIC_PATTERN = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_-]+)?$")
# Characters a host glob may hold: those of host ids and fnmatch's * ? [ ] !
HOST_GLOB_PATTERN = re.compile(r"^[a-z0-9_*?\[\]!-]+$")

ALERT_FIELDS = {
    "id": "host_id/metric/opened_at in ms: stable, the de-duplication key",
    "host_id": "the host", "hostname": "its real name", "metric": "metric name, or 'host' / 'boot'",
    "level": "current level", "previous": "level before the last change",
    "value": "value at the last change (boot time for 'boot', null for 'host')", "ts": "epoch s of the last change",
    "opened_at": "epoch s the episode opened", "status": "firing | resolved",
    "state": "firing | acknowledged | silenced | resolved", "acked_by": "authid or null", "acked_at": "epoch s or null",
    "ack_comment": "text or null", "silenced_by": "silence id or null", "resolved_at": "epoch s or null",
    "updated_at": "epoch s of this record's last change", "url": "the host on the dashboard (relative)",
}
SILENCE_FIELDS = {
    "id": "silence id", "matchers": "{host: glob, metric: family or name}, either may be absent",
    "starts_at": "epoch s", "ends_at": "epoch s, or null: until the matched alerts resolve",
    "created_by": "authid", "created_at": "epoch s", "comment": "text",
    "state": "pending | active | expired", "expired_at": "epoch s or null",
}


def checked_comment(comment, field="comment"):
    """The comment, or InvalidArgument naming the field when it is not text of at most MAX_COMMENT characters."""
    if comment is None:
        return ""
    if not isinstance(comment, str):
        raise InvalidArgument(f"{field} must be text, got {type(comment).__name__}")
    if len(comment) > MAX_COMMENT:
        raise InvalidArgument(f"{field} is {len(comment)} characters long; at most {MAX_COMMENT} are kept: shorten it")
    return comment


def checked_matchers(matchers):
    """The matchers dict, or InvalidArgument naming the key or value that is wrong."""
    if not isinstance(matchers, dict) or not matchers:
        raise InvalidArgument(f"matchers must be an object with 'host' (a glob such as 'web-*') and/or 'metric' "
                              f"(a family such as 'cpu'), got {matchers!r:.80}")
    for key in matchers:
        if key not in MATCHER_KEYS:
            raise InvalidArgument(f"matchers: unknown key {key!r:.40}; the keys are {', '.join(MATCHER_KEYS)}")
    host, metric = matchers.get("host"), matchers.get("metric")
    if host is not None:
        if not isinstance(host, str) or not host or len(host) > MAX_MATCHER or not HOST_GLOB_PATTERN.match(host):
            raise InvalidArgument(f"matchers.host: {host!r:.80} is not a host glob (a-z 0-9 _ - and * ? [...], "
                                  f"e.g. 'web-*')")
        if host.count("[") != host.count("]"):
            raise InvalidArgument(f"matchers.host: {host!r:.80} is not a valid glob: unbalanced [ ]")
        for content in re.findall(r"\[!?([^\]]*)\]", host):
            for low, high in re.findall(r"(.)-(.)", content):
                if low > high:  # fnmatch would quietly match nothing with it
                    raise InvalidArgument(f"matchers.host: {host!r:.80} is not a valid glob: range {low}-{high} is reversed")
    if metric is not None and (not isinstance(metric, str) or len(metric) > MAX_MATCHER or not METRIC_PATTERN.match(metric)):
        raise InvalidArgument(f"matchers.metric: {metric!r:.80} is not a metric family or name (e.g. 'cpu', "
                              f"'disk_used.root', 'host')")
    return {key: matchers[key] for key in MATCHER_KEYS if matchers.get(key) is not None}


def matches(matchers, record):
    """Whether a silence's matchers select the alert record (host by glob, metric by family or exact name)."""
    host, metric = matchers.get("host"), matchers.get("metric")
    if host is not None and not fnmatch.fnmatchcase(record["host_id"], host):
        return False
    return metric is None or metric == record["metric"] or metric == family_of(record["metric"])


def silence_window(duration, until, starts, now):
    """(starts_at, ends_at) of a new silence, or InvalidArgument naming the field that is wrong."""
    for name, value in (("duration", duration), ("until", until), ("starts", starts)):
        if value is not None and not finite_number(value):
            raise InvalidArgument(f"{name} must be a number ({'seconds' if name == 'duration' else 'epoch seconds'}), "
                                  f"got {value!r:.40}")
    if duration is not None and until is not None:
        raise InvalidArgument("give either duration (seconds) or until (epoch seconds), not both")
    starts_at = now if starts is None or starts < now else float(starts)
    if duration is not None:
        if duration <= 0:
            raise InvalidArgument(f"duration must be > 0 seconds, got {duration}")
        if duration > MAX_SILENCE_SECONDS:
            raise InvalidArgument(f"duration must be at most {MAX_SILENCE_SECONDS:.0f} seconds (a year), got {duration}")
        return starts_at, starts_at + float(duration)
    if until is not None:
        if until <= now:
            raise InvalidArgument(f"until: {until} is in the past ({now - until:.0f} s ago); a silence must end later")
        if until <= starts_at:
            raise InvalidArgument(f"until: {until} is before starts ({starts_at}); a silence must end after it starts")
        return starts_at, float(until)
    return starts_at, None


def state_of(record):
    """What people see of an alert: resolved, else silenced, else acknowledged, else firing."""
    if record["status"] == "resolved":
        return "resolved"
    if record["silenced_by"]:
        return "silenced"
    return "acknowledged" if record["acked_by"] else "firing"


def checked_level_event(event):
    """The level event's (host_id, metric, level), InvalidArgument naming the field when it is malformed, or None for an
    event without a level (`nerve alert send`'s free-form alerts, which have no lifecycle)."""
    if not isinstance(event, dict):
        raise InvalidArgument(f"alert event must be an object, got {type(event).__name__}")
    if "level" not in event:
        return None
    host_id, metric, level = event.get("host_id"), event.get("metric"), event.get("level")
    if not isinstance(host_id, str) or not HOST_ID_PATTERN.match(host_id):
        raise InvalidArgument(f"alert event field 'host_id': {host_id!r:.70} is not a host id")
    if not isinstance(metric, str) or not METRIC_PATTERN.match(metric):
        raise InvalidArgument(f"alert event field 'metric': {metric!r:.70} is not a metric name")
    if level not in LEVELS:
        raise InvalidArgument(f"alert event field 'level': {level!r:.40} is not one of {', '.join(LEVELS)}")
    if not finite_number(event.get("ts")):
        raise InvalidArgument(f"alert event field 'ts' must be epoch seconds, got {event.get('ts')!r:.40}")
    return host_id, metric, level


class AlertBook:
    """Every open alert, recently resolved ones and the silences; each method returns what changed."""

    def __init__(self):
        self.alerts = {}  # id -> record of every open alert
        self.open = {}  # (host_id, metric) -> id of its open episode
        self.resolved = OrderedDict()  # id -> record, oldest first, bounded
        self.silences = {}  # id -> silence, expired ones included until pruned

    # -- loading (from the store, or a standby following the active keeper) --------------------------------------
    def put_alert(self, record):
        """Take a whole record as it is (stored, or published by the active keeper)."""
        key = (record["host_id"], record["metric"])
        if record["status"] == "resolved":
            self.alerts.pop(record["id"], None)
            if self.open.get(key) == record["id"]:
                del self.open[key]
            self._keep_resolved(record)
        else:
            self.resolved.pop(record["id"], None)
            self.alerts[record["id"]] = record
            self.open[key] = record["id"]

    def put_silence(self, silence):
        """Take a whole silence as it is."""
        self.silences[silence["id"]] = silence

    def _keep_resolved(self, record):
        self.resolved[record["id"]] = record
        self.resolved.move_to_end(record["id"])
        while len(self.resolved) > MAX_RESOLVED_KEPT:
            self.resolved.popitem(last=False)

    # -- level events ---------------------------------------------------------------------------------------------
    def apply_event(self, event, now):
        """Apply a level event ({host_id, metric, level, previous, value, ts, hostname}); the records that changed."""
        checked = checked_level_event(event)
        if checked is None:
            return []
        host_id, metric, level = checked
        current = self.alerts.get(self.open.get((host_id, metric)))
        if level in RESOLVING_LEVELS:
            if current is None:
                return []
            current.update(level=level, previous=current["level"], value=event.get("value"), ts=event["ts"],
                           status="resolved", resolved_at=event["ts"])
            return [self._changed(current, now)]
        if current is not None:
            if current["level"] == level:
                return []
            current.update(level=level, previous=current["level"], value=event.get("value"), ts=event["ts"])
            return [self._changed(current, now)]
        record = self._open(host_id, metric, level, event, now)
        return [self._changed(record, now)]

    def _open(self, host_id, metric, level, event, now):
        opened_ms = int(event["ts"] * 1000)
        while f"{host_id}/{metric}/{opened_ms}" in self.resolved or f"{host_id}/{metric}/{opened_ms}" in self.alerts:
            opened_ms += 1  # a new episode in the same millisecond as the last one of this (host, metric)
        record = {"id": f"{host_id}/{metric}/{opened_ms}", "host_id": host_id,
                  "hostname": str(event.get("hostname") or host_id)[:255], "metric": metric, "level": level,
                  "previous": event.get("previous"), "value": event.get("value"), "ts": event["ts"],
                  "opened_at": event["ts"], "status": "firing", "state": "firing", "acked_by": None, "acked_at": None,
                  "ack_comment": None, "silenced_by": None, "resolved_at": None, "updated_at": now,
                  "url": f"/#/host/{host_id}"}
        record["silenced_by"] = self._silence_for(record)
        self.alerts[record["id"]] = record
        self.open[(host_id, metric)] = record["id"]
        return record

    def _changed(self, record, now):
        record["state"] = state_of(record)
        record["updated_at"] = now
        if record["status"] == "resolved":
            self.alerts.pop(record["id"], None)
            key = (record["host_id"], record["metric"])
            if self.open.get(key) == record["id"]:
                del self.open[key]
            self._keep_resolved(record)
        return dict(record)

    # -- acknowledgement ------------------------------------------------------------------------------------------
    def record(self, alert_id):
        """The record of an open or recently resolved alert, or NotFound naming the id."""
        if not isinstance(alert_id, str):
            raise InvalidArgument(f"alert_id must be text such as 'web-01/cpu/1765000000000', got {type(alert_id).__name__}")
        record = self.alerts.get(alert_id) or self.resolved.get(alert_id)
        if record is None:
            raise NotFound(f"alert_id {alert_id!r:.120} is not an open alert; nerve.alerts.open lists them")
        return record

    def ack(self, alert_id, by, comment, now):
        """Acknowledge an open alert as `by`; the changed record."""
        comment = checked_comment(comment)
        record = self.record(alert_id)
        if record["status"] == "resolved":
            raise InvalidArgument(f"alert_id {alert_id!r:.120} resolved at {record['resolved_at']}; only open alerts "
                                  f"can be acknowledged")
        record.update(acked_by=by, acked_at=now, ack_comment=comment)
        return self._changed(record, now)

    # -- silences -------------------------------------------------------------------------------------------------
    def create_silence(self, matchers, by, now, duration=None, until=None, starts=None, comment=""):
        """A new silence (pending or active); returns it and the alert records it silenced now."""
        matchers = checked_matchers(matchers)
        comment = checked_comment(comment)
        starts_at, ends_at = silence_window(duration, until, starts, now)
        if ends_at is None and starts_at <= now and not any(matches(matchers, record) for record in self.alerts.values()):
            raise InvalidArgument(f"matchers {matchers} match no open alert, so a silence until they resolve would end at "
                                  f"once: give duration or until")
        silence = {"id": uuid.uuid4().hex[:16], "matchers": matchers, "starts_at": starts_at, "ends_at": ends_at,
                   "created_by": by, "created_at": now, "comment": comment,
                   "state": "active" if starts_at <= now else "pending", "expired_at": None}
        self.silences[silence["id"]] = silence
        return dict(silence), self._resilence(now)

    def expire_silence(self, silence_id, now):
        """End a silence now; returns it and the alert records that are no longer silenced by it."""
        if not isinstance(silence_id, str):
            raise InvalidArgument(f"silence_id must be text, got {type(silence_id).__name__}")
        silence = self.silences.get(silence_id)
        if silence is None:
            raise NotFound(f"silence_id {silence_id!r:.60} is not a known silence; nerve.silence.list lists them")
        if silence["state"] != "expired":
            silence.update(state="expired", expired_at=now)
        return dict(silence), self._resilence(now)

    def current_silences(self):
        """Pending and active silences, soonest ending first (open-ended last)."""
        live = [dict(silence) for silence in self.silences.values() if silence["state"] != "expired"]
        return sorted(live, key=lambda silence: (silence["ends_at"] is None, silence["ends_at"] or 0, silence["id"]))

    def _silence_for(self, record):
        for silence in self.silences.values():
            if silence["state"] == "active" and matches(silence["matchers"], record):
                return silence["id"]
        return None

    def _resilence(self, now):
        """Point each open alert at the active silence that matches it now; the records that changed."""
        changed = []
        for record in list(self.alerts.values()):
            silenced_by = record["silenced_by"]
            still = silenced_by in self.silences and self.silences[silenced_by]["state"] == "active" \
                and matches(self.silences[silenced_by]["matchers"], record)
            wanted = silenced_by if still else self._silence_for(record)
            if wanted != silenced_by:
                record["silenced_by"] = wanted
                changed.append(self._changed(record, now))
        return changed

    def tick(self, now):
        """Start due silences and end those past their end or whose matched alerts all resolved; returns
        (changed silences, changed alert records)."""
        changed = []
        for silence in self.silences.values():
            state = silence["state"]
            if state == "pending" and silence["starts_at"] <= now:
                silence["state"] = "active"
            if silence["state"] == "active":
                ended = silence["ends_at"] is not None and silence["ends_at"] <= now
                if silence["ends_at"] is None:
                    ended = not any(matches(silence["matchers"], record) for record in self.alerts.values())
                if ended:
                    silence.update(state="expired", expired_at=now)
            if silence["state"] != state:
                changed.append(dict(silence))
        return changed, (self._resilence(now) if changed else [])

    def open_alerts(self):
        """Every open alert, newest first."""
        return sorted((dict(record) for record in self.alerts.values()), key=lambda record: record["opened_at"],
                      reverse=True)

    def resolved_since(self, since):
        """The kept resolved alerts whose record changed at or after `since` (epoch s), oldest change first."""
        return sorted((dict(record) for record in self.resolved.values() if record["updated_at"] >= since),
                      key=lambda record: record["updated_at"])

    def open_of(self, host_id, metric):
        """The open record of (host, metric), or None."""
        return self.alerts.get(self.open.get((host_id, metric)))
