"""`nerve notifier`: alert records from `nerve.alerts.changed` turned into webhooks, mails and Alertmanager alerts.

Every record is applied to the on-disk outbox (components/notify/outbox.py) as it arrives; only the leader sends.
Several notifiers may run: each registers LEADER_URI with invoke='first' and the one the router routes that call to
is the leader, as with the orchestrators. The leader publishes what each channel accepted on DELIVERED_TOPIC, so a
standby with an outbox of its own marks it too; notifiers sharing a data directory share one outbox. A new leader
(and every notifier at start) first syncs from `nerve.alerts.open()`, when the alert keeper serves it, then sends
whatever its outbox still holds: a notification the old leader had sent but not yet recorded is sent again, with
the same de-duplication key.

Each channel is retried on its own with exponential backoff while it fails, so a channel that is down holds back
only its own messages.
"""

import sqlite3
import time
from collections import Counter

from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer, reactor
from twisted.logger import Logger

from components.mesh.decorators import every, on, on_join, procedure
from components.mesh.errors import InvalidArgument
from components.mesh.leadership import routed_to_me
from components.notify.channels import DeliveryError, Senders
from components.notify.outbox import Outbox
from components.notify.routing import validate_record

log = Logger(namespace="nerve.notifier")

CHANGED_TOPIC = "nerve.alerts.changed"
OPEN_URI = "nerve.alerts.open"
LEADER_URI = "nerve.notifier.leader"
STATS_URI = "nerve.notifier.stats"
PENDING_URI = "nerve.notifier.pending"
DELIVERED_TOPIC = "nerve.notifier.delivered"
FIRST_RETRY_DELAY = 1.0
TICK_SECONDS = 1.0
FORGET_EVERY = 3600.0
# A standby catching up takes a notification as sent by the leader only if its alert last changed this long ago.
CATCH_UP_MARGIN = 10.0
SYNC_OVERLAP = 10.0  # seconds before the last stored change a sync asks resolved alerts from (clocks of two machines)
NOT_SERVED = ("wamp.error.no_such_procedure", "wamp.error.no_such_registration")


class ChannelHealth:
    """How a channel is doing: counts, the last error and success, and when it may be tried again."""

    def __init__(self, channel):
        self.channel = channel
        self.sent = 0  # notifications the channel accepted
        self.messages = 0  # messages (groups) it accepted
        self.failed = 0  # attempts that failed
        self.failures = 0  # consecutive failures, 0 once an attempt succeeds
        self.failed_at = 0.0
        self.retry_at = 0.0
        self.last_error = None
        self.last_error_at = None
        self.last_success_at = None
        self.in_flight = set()  # hosts whose message is on its way

    def record(self, pending):
        """The channel's line in nerve.notifier.stats."""
        state = "unreachable" if self.failures else ("ok" if self.last_success_at else "idle")
        return {"type": self.channel.type, "state": state, "sent": self.sent, "messages": self.messages,
                "failed": self.failed, "pending": pending, "in_flight": len(self.in_flight),
                "consecutive_failures": self.failures, "last_error": self.last_error,
                "last_error_at": self.last_error_at, "last_success_at": self.last_success_at,
                "retry_at": self.retry_at if self.failures else None}


class Notifier:
    """Applies alert records to the outbox; as the leader, sends what is due on each channel and retries failures."""

    def __init__(self, config, mesh, clock=time.time, scheduler=reactor, senders=None, outbox=None):
        self.config = config
        self.mesh = mesh
        self.clock = clock
        self.scheduler = scheduler
        self.outbox = outbox or Outbox(config.outbox_path)
        self.senders = senders or Senders(config, scheduler)
        self.health = {name: ChannelHealth(channel) for name, channel in config.channels.items()}
        self.stats = Counter()
        self.active = False
        self.deciding = False  # a leadership check (and the sync it may start) is under way
        self.standing = None  # "leader" or "standby" once the router said, after each join
        self.seen_at = {}  # firing alert id -> clock time its latest record was applied here
        self.incoming = []  # records received in this reactor turn, applied together at its end
        self.accepted = []  # (health, host, keys) of messages channels took in this turn, recorded at its end
        self.dispatch_call = None
        self.forgotten_at = 0.0

    # -- records in ------------------------------------------------------------------------
    @on(CHANGED_TOPIC)
    def on_changed(self, record):
        """Take one alert record (every change of an alert is published as the full record); the records of one
        burst are applied together, in one transaction, at the end of the reactor turn."""
        self.incoming.append(validate_record(record))
        if len(self.incoming) == 1:
            self.scheduler.callLater(0, self._apply_incoming)

    def _apply_incoming(self):
        records, self.incoming = self.incoming, []
        try:
            self.apply(records)
        except sqlite3.OperationalError as error:  # locked past its timeout by another notifier, or a full disk
            log.warn("cannot store {n} alert records ({error}); trying again in 1 s", n=len(records), error=error)
            self.incoming[:0] = records
            self.scheduler.callLater(1.0, self._apply_incoming)

    def apply(self, records):
        """Store records and queue what they cause; returns the notifications queued."""
        now = self.clock()
        due = self.outbox.apply(records, self.config.routes, now)
        for record in records:
            if record["status"] == "firing":
                self.seen_at[record["id"]] = now
            else:
                self.seen_at.pop(record["id"], None)
        self.stats["records"] += len(records)
        self.stats["queued"] += len(due)
        if due:
            self._schedule_dispatch(min(n.group_wait for n in due))
        return due

    @defer.inlineCallbacks
    def sync(self):
        """Apply every open alert from nerve.alerts.open(); an alert stored as firing that is no longer open
        resolved while nobody listened: it is resolved here too. Nothing happens when no keeper serves it.
        Returns the notifications it queued."""
        asked_at = self.clock()
        last_change = self.outbox.last_change()
        # Alerts that opened and resolved since the last record stored here were missed: ask for those too. A new
        # outbox asks for none, so a first start does not page about history.
        since = None if last_change is None else last_change - SYNC_OVERLAP
        try:
            answer = yield self.mesh.call(OPEN_URI, timeout=10, **({} if since is None else {"since": since}))
        except ApplicationError as error:
            if error.error not in NOT_SERVED:
                log.warn("cannot sync open alerts ({error})", error=error.error_message() or error.error)
            return []
        except defer.CancelledError:
            log.warn("cannot sync open alerts: {uri} did not answer within 10 s", uri=OPEN_URI)
            return []
        records = []
        answer = answer if isinstance(answer, dict) else {}
        for record in answer.get("alerts", []) + answer.get("resolved", []):
            try:
                records.append(validate_record(record))
            except InvalidArgument as error:  # one bad record must not stop the others
                self.mesh.count_dropped(OPEN_URI, error)
        queued = self.apply(records)
        known = {record["id"] for record in records}
        now = self.clock()
        closed = [dict(stored, status="resolved", state="resolved", resolved_at=now,
                       updated_at=max(float(stored.get("updated_at") or 0.0), now))
                  for stored in self.outbox.open_alerts()
                  if stored["id"] not in known and self.seen_at.get(stored["id"], 0.0) < asked_at]
        queued += self.apply(closed)
        self.stats["synced"] += 1
        log.info("synced {n} open and {resolved} resolved alerts from {uri}; {closed} more resolved meanwhile",
                 n=len(answer.get("alerts", [])), resolved=len(answer.get("resolved", [])), uri=OPEN_URI,
                 closed=len(closed))
        return queued

    @defer.inlineCallbacks
    def catch_up(self):
        """As a standby that just joined: sync the open alerts, and take what the leader already sent as sent.

        A standby with an outbox of its own has not seen the alerts that opened before it started; without this it
        would send them all again when it takes over. What the leader still holds (nerve.notifier.pending), and
        what changed too recently for the leader to have it for sure, stays queued: sent twice rather than never."""
        queued = yield self.sync()
        if not queued:
            return
        try:
            answer = yield self.mesh.call(PENDING_URI, timeout=10)
        except (ApplicationError, defer.CancelledError):
            return  # no leader to ask: a takeover sends these (again, with the same keys)
        pending = {(channel, key) for channel, keys in answer.get("keys", {}).items() for key in keys}
        settled = self.clock() - CATCH_UP_MARGIN
        sent = {}
        for notification in queued:
            changed = notification.record.get("updated_at")
            if (notification.channel, notification.key) not in pending and isinstance(changed, (int, float)) \
                    and changed < settled:
                sent.setdefault(notification.channel, []).append(notification.key)
        self.outbox.delivered(sent, self.clock())
        taken = sum(map(len, sent.values()))
        self.stats["caught_up"] += taken
        log.info("caught up: {taken} of {queued} notifications taken as sent by the leader", taken=taken,
                 queued=len(queued))

    @on(DELIVERED_TOPIC)
    def follow_delivered(self, event):
        """As a standby, mark what the leader's channels accepted, so a takeover does not send it again."""
        if self.active or not isinstance(event, dict) or event.get("channel") not in self.health:
            return
        if self.incoming:
            # The records of this turn first, in arrival order: the leader sent what they queue before saying so,
            # and a mark of a notification not stored yet would be lost (a takeover then sent it again).
            self._apply_incoming()
        keys = [key for key in event.get("keys", []) if isinstance(key, str)]
        self.outbox.delivered({event["channel"]: keys}, float(event.get("at") or self.clock()))

    # -- leadership --------------------------------------------------------------------
    @on_join
    def rejoined(self):
        """After every (re)join, send nothing until the router confirms this one is first (LEADER_URI)."""
        self.active = self.deciding = False
        self.standing = None
        return self.check_leadership()

    @every(0.5, now=False)
    @defer.inlineCallbacks
    def check_leadership(self):
        """Ask the router who is first; lead (sync, then send) or stand by accordingly."""
        if self.deciding:
            return  # the previous round is still syncing
        self.deciding = True
        try:
            active = yield routed_to_me(self.mesh, LEADER_URI)
            standing = None if active is None else "leader" if active else "standby"
            if standing is not None and standing != self.standing:
                self.stats["takeovers" if active else "standby"] += 1
                log.info("this notifier is now {state}", state="the leader" if active else "a standby")
                yield self.sync() if active else self.catch_up()
                self.standing = standing
                self.active = active and self.mesh.connected
                if self.active:
                    self._schedule_dispatch(0)
        finally:
            self.deciding = False

    # -- sending -----------------------------------------------------------------------
    @every(TICK_SECONDS)
    def tick(self):
        """Queue the repeats that are due; send what is due; now and then drop what is long done."""
        now = self.clock()
        repeats = self.outbox.repeats(self.config.routes, now)
        self.stats["queued"] += len(repeats)
        if now - self.forgotten_at > FORGET_EVERY:
            self.forgotten_at = now
            self.outbox.forget_old(now)
        self.dispatch()

    def _schedule_dispatch(self, delay):
        delay = max(delay, 0.0)
        if self.dispatch_call is not None and self.dispatch_call.active():
            if self.dispatch_call.getTime() - self.scheduler.seconds() <= delay:
                return
            self.dispatch_call.cancel()
        self.dispatch_call = self.scheduler.callLater(delay, self.dispatch)

    def dispatch(self):
        """Send every due group on every channel that may be tried now, up to its concurrency."""
        if not self.active or not self.mesh.connected:
            return
        now = self.clock()
        wake = []
        for name, health in self.health.items():
            if now < health.retry_at:
                wake.append(health.retry_at - now)
                continue
            limit = health.channel.concurrency if not health.failures else 1  # a failing channel gets one probe
            free = limit - len(health.in_flight)
            if free <= 0:
                continue
            for group in self.outbox.due_groups(name, now, free, skip=health.in_flight):
                self._send(health, group)
        upcoming = self.outbox.next_due()
        if upcoming is not None and upcoming > now:
            wake.append(upcoming - now)
        if wake:
            self._schedule_dispatch(min(wake))

    def _send(self, health, group):
        channel, host = health.channel, group[0].host_id
        keys = [notification.key for notification in group]
        health.in_flight.add(host)
        started = self.clock()
        sending = defer.maybeDeferred(self.senders.send, channel, group, self._repeat_interval)
        sending.addCallbacks(self._sent, self._failed, callbackArgs=(health, host, keys),
                             errbackArgs=(health, host, started))
        sending.addErrback(lambda failure: log.failure("handling a delivery on {channel} failed", failure,
                                                       channel=channel.name))

    def _repeat_interval(self, notification):
        routes = [route for route in self.config.routes if notification.channel in route.channels]
        return (routes[0] if routes else self.config.routes[0]).repeat_interval

    def _sent(self, _, health, host, keys):
        health.sent += len(keys)
        health.messages += 1
        health.failures, health.last_success_at = 0, self.clock()
        # Marked at the end of the turn with every other message the channels took in it (one transaction). The host
        # stays in flight until then, so no dispatch in between picks its notifications again.
        self.accepted.append((health, host, keys))
        if len(self.accepted) == 1:
            self.scheduler.callLater(0, self._record_accepted)

    def _record_accepted(self):
        accepted, self.accepted = self.accepted, []
        by_channel = {}
        for health, host, keys in accepted:
            by_channel.setdefault(health.channel.name, []).extend(keys)
        now = self.clock()
        try:
            fresh = self.outbox.delivered(by_channel, now)
        finally:
            # Also when the store cannot be written (another notifier holds it locked too long): the hosts must not
            # stay blocked; their notifications, not marked, are sent again later with the same keys.
            for health, host, _ in accepted:
                health.in_flight.discard(host)
        self.stats["already_delivered"] += sum(map(len, by_channel.values())) - max(fresh, 0)
        for channel, keys in by_channel.items():
            self.mesh.publish(DELIVERED_TOPIC, {"channel": channel, "keys": keys, "at": now})
        self.dispatch()

    def _failed(self, failure, health, host, started):
        now = self.clock()
        health.in_flight.discard(host)
        health.failed += 1
        reason = failure.getErrorMessage() if failure.check(DeliveryError) else f"{failure.type.__name__}: {failure.value}"
        if not failure.check(DeliveryError):
            log.failure("sending on {channel} failed", failure, channel=health.channel.name)
        if health.failures == 0 or started >= health.failed_at:
            # One step of backoff per round of attempts: the other messages that were in flight with this one
            # failing too are the same outage, not more of it.
            health.failures += 1
            delay = min(FIRST_RETRY_DELAY * 2 ** (health.failures - 1), self.config.max_retry_delay)
            health.retry_at = now + delay
            health.failed_at = now
            if health.failures in (1, 5) or health.failures % 50 == 0:
                log.warn("channel {channel} failed {n} time(s) in a row ({reason}); retrying in {delay:g} s",
                         channel=health.channel.name, n=health.failures, reason=reason, delay=delay)
        health.last_error, health.last_error_at = reason, now
        self._schedule_dispatch(max(health.retry_at - now, 0))

    # -- queries -----------------------------------------------------------------------
    @procedure(LEADER_URI, invoke="first")
    def leader(self):
        """The session id of the notifier the router routes to first: the one that sends."""
        return self.mesh.session.session_id

    @procedure(PENDING_URI, invoke="first")
    def pending_keys(self):
        """{keys: {channel: [key, ...]}}: what the leader's outbox still owes, for a standby catching up."""
        return {"keys": self.outbox.undelivered()}

    @procedure(STATS_URI, invoke="first")
    def get_stats(self):
        """Per channel: state (ok, unreachable, idle), sent, failed, pending, last error, last success; and this
        notifier's counters."""
        pending = self.outbox.pending()
        return {"leader": self.active, "authid": self.mesh.config.mesh.authid, "ts": round(self.clock(), 3),
                "channels": {name: health.record(pending.get(name, 0)) for name, health in self.health.items()},
                "counters": dict(self.stats), "dropped": dict(self.mesh.dropped),
                "handler_errors": dict(self.mesh.errors)}
