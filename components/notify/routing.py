"""What an alert record means for each channel: which notifications are due, with which de-duplication key.

Plain functions over plain data, so the rules are tested without a router or a clock:
- a firing alert goes to the channels of every route it matches (a channel named by several matching routes
  follows the first of them); a level change inside the episode is a new notification, numbered as a repeat;
- every `repeat_interval` a firing alert that nobody acknowledged is sent again (repeat 1, 2, ...);
- an acknowledged or silenced alert sends nothing while it fires; its resolution still reaches the channels
  that heard it fire (when their route says send_resolved), and only those;
- an alert whose level does not notify (OFFLINE: a tracker that said goodbye) sends nothing;
- a resolution carries the level the channel was told (`level`) and what the alert resolved as (`resolved_as`).
The de-duplication key of a notification is (alert id, status, repeat number): a receiver that sees a key twice
has seen the same notification twice.
"""

from dataclasses import dataclass

from components.mesh.errors import InvalidArgument

STATUSES = ("firing", "resolved")
STATES = ("firing", "acknowledged", "silenced", "resolved")
# Host states that are shown but page nobody (docs/alerts.md: a tracker stopped with SIGTERM says goodbye).
NON_NOTIFYING_LEVELS = ("OFFLINE", "LOW")
QUIET_STATES = ("acknowledged", "silenced")
# Fields a record must carry to be routed (the rest of the record travels as it is).
REQUIRED_FIELDS = {"id": str, "host_id": str, "metric": str, "status": str}


def validate_record(record):
    """Raise InvalidArgument unless record looks like an alert record of `nerve.alerts.changed`."""
    if not isinstance(record, dict):
        raise InvalidArgument(f"an alert record must be an object, got {type(record).__name__}")
    for name, kind in REQUIRED_FIELDS.items():
        if not isinstance(record.get(name), kind) or not record.get(name):
            raise InvalidArgument(f"alert record field {name} must be a non-empty string, got {record.get(name)!r:.60}")
    if record["status"] not in STATUSES:
        raise InvalidArgument(f"alert record field status must be one of {', '.join(STATUSES)}, got {record['status']!r:.30}")
    if record.get("state", record["status"]) not in STATES:
        raise InvalidArgument(f"alert record field state must be one of {', '.join(STATES)}, got {record.get('state')!r:.30}")
    return record


def dedup_key(alert_id, status, repeat):
    """The receiver-side de-duplication key of one notification."""
    return f"{alert_id}|{status}|{repeat}"


@dataclass
class Thread:
    """What one channel has been told about one alert: by which route, how many times, at which level."""

    channel: str
    route: int
    repeat: int
    level: str
    notified_at: float
    resolved: bool = False


@dataclass(frozen=True)
class Notification:
    """One alert's notification to one channel, waiting in the outbox for its group to be sent."""

    channel: str
    key: str
    alert_id: str
    host_id: str
    status: str
    repeat: int
    record: dict
    group_wait: float


def _notification(thread, record, status, group_wait):
    return Notification(thread.channel, dedup_key(record["id"], status, thread.repeat if status == "firing" else 0),
                        record["id"], record["host_id"], status, thread.repeat if status == "firing" else 0,
                        record, group_wait)


def targets(record, routes):
    """{channel: index of the first matching route naming it} for a firing record."""
    found = {}
    for index, route in enumerate(routes):
        if route.matches(record):
            for channel in route.channels:
                found.setdefault(channel, index)
    return found


def route_of(thread, routes):
    """The route a thread was opened by (the first one when the config has changed since)."""
    return routes[thread.route] if 0 <= thread.route < len(routes) else routes[0]


def plan(record, threads, routes, now):
    """The notifications a new version of an alert record causes; updates `threads` ({channel: Thread}) in place."""
    if record["status"] == "resolved":
        if not threads:
            return _missed(record, threads, routes, now)
        due = []
        for thread in threads.values():
            if thread.resolved:
                continue
            thread.resolved = True
            route = route_of(thread, routes)
            if route.send_resolved:
                # The channel hears the level it was told fired, as Alertmanager needs to match the labels it holds;
                # what the metric or host resolved as (LOW, UP, OFFLINE) goes beside it.
                told = dict(record, level=thread.level, resolved_as=record.get("level"))
                due.append(_notification(thread, told, "resolved", route.group_wait))
        return due
    if record.get("state") in QUIET_STATES or record.get("level") in NON_NOTIFYING_LEVELS:
        return []
    due = []
    for channel, index in targets(record, routes).items():
        thread = threads.get(channel)
        if thread is None:
            thread = threads[channel] = Thread(channel, index, 0, record.get("level"), now)
        elif thread.resolved or thread.level == record.get("level"):
            continue  # nothing new for this channel: an ack, a silence, a new value at the same level
        else:
            thread.repeat, thread.level, thread.notified_at = thread.repeat + 1, record.get("level"), now
        due.append(_notification(thread, record, "firing", routes[index].group_wait))
    return due


def _missed(record, threads, routes, now):
    """An alert that opened and resolved while this notifier did not hear it (a sync tells it afterwards): its firing,
    late, then its resolution; nothing if it was silenced or acknowledged, or never rose to a notifying level."""
    fired = record.get("previous")
    if record.get("silenced_by") or record.get("acked_by") or fired is None or fired in NON_NOTIFYING_LEVELS:
        return []
    due = plan(dict(record, status="firing", state="firing", level=fired), threads, routes, now)
    return due + plan(record, threads, routes, now) if threads else due


def plan_repeats(record, threads, routes, now):
    """The repeats due now for a firing alert nobody acknowledged or silenced; updates `threads` in place."""
    if record["status"] != "firing" or record.get("state") in QUIET_STATES:
        return []
    due = []
    for thread in threads.values():
        route = route_of(thread, routes)
        if thread.resolved or not route.matches(record) or now < thread.notified_at + route.repeat_interval:
            continue
        thread.repeat, thread.notified_at = thread.repeat + 1, now
        due.append(_notification(thread, record, "firing", route.group_wait))
    return due
