"""The notifier's store on disk (SQLite): the alerts it follows, what each channel was told, and the outbox.

Everything a notification needs is written in one transaction with the record that caused it, before anything
is sent, so a notifier killed at any moment finds on restart what it still owes. A notification leaves the
outbox only once its channel accepted it (`delivered_at`). Several notifiers may share one file (the same data
directory): every change is a read-modify-write inside `BEGIN IMMEDIATE` and every notification has a unique
(channel, key), so two processes applying the same record write it once.
"""

import json
import sqlite3
from pathlib import Path

from components.notify.routing import Notification, Thread, plan, plan_repeats

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY, host_id TEXT NOT NULL, status TEXT NOT NULL, updated_at REAL, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS threads (
    alert_id TEXT NOT NULL, channel TEXT NOT NULL, route INTEGER NOT NULL, repeat INTEGER NOT NULL, level TEXT,
    notified_at REAL NOT NULL, resolved INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (alert_id, channel));
CREATE TABLE IF NOT EXISTS outbox (
    channel TEXT NOT NULL, key TEXT NOT NULL, alert_id TEXT NOT NULL, host_id TEXT NOT NULL, status TEXT NOT NULL,
    repeat INTEGER NOT NULL, record TEXT NOT NULL, due_at REAL NOT NULL, created_at REAL NOT NULL,
    delivered_at REAL, PRIMARY KEY (channel, key));
CREATE INDEX IF NOT EXISTS threads_told ON threads (resolved, notified_at);
CREATE INDEX IF NOT EXISTS outbox_waiting ON outbox (channel, delivered_at, host_id, due_at);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (delivered_at, due_at);
"""
# Resolved alerts are kept this long (a late duplicate of one of their events changes nothing), delivered
# notifications too.
KEEP_SECONDS = 2 * 86400


class Outbox:
    """The notifier's SQLite store: apply alert records, hand out due notifications, mark them delivered."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE), so a read-modify-write is never interleaved
        # with another process's. WAL: readers do not wait for the writer; NORMAL sync: a commit survives a kill of
        # the process (not a power cut of the machine, which FULL would add at a cost per commit).
        self.db = sqlite3.connect(str(self.path), isolation_level=None, timeout=5.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self):
        """Close the database."""
        self.db.close()

    def _transaction(self, work):
        self.db.execute("BEGIN IMMEDIATE")
        try:
            result = work()
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return result

    # -- records in ------------------------------------------------------------------------
    def apply(self, records, routes, now):
        """Store new versions of alert records (one transaction) and queue the notifications they cause; returns them.

        A version older than the stored one (by updated_at) changes nothing: events and a later sync may overlap."""
        return self._transaction(lambda: [due for record in records for due in self._apply(record, routes, now)])

    def _apply(self, record, routes, now):
        row = self.db.execute("SELECT updated_at, record FROM alerts WHERE id = ?", (record["id"],)).fetchone()
        updated = record.get("updated_at", record.get("ts"))
        if row is not None:
            stored_updated, stored = row[0], json.loads(row[1])
            if stored.get("status") == "resolved" or (
                    isinstance(updated, (int, float)) and isinstance(stored_updated, (int, float)) and updated < stored_updated):
                return []
        self.db.execute("INSERT OR REPLACE INTO alerts (id, host_id, status, updated_at, record) VALUES (?, ?, ?, ?, ?)",
                        (record["id"], record["host_id"], record["status"],
                         updated if isinstance(updated, (int, float)) else None, json.dumps(record)))
        threads = self._threads(record["id"])
        due = plan(record, threads, routes, now)
        self._save(record["id"], threads, due, now)
        return due

    def repeats(self, routes, now):
        """Queue the repeats due now for every firing alert; returns them."""
        return self._transaction(lambda: self._repeats(routes, now))

    def _repeats(self, routes, now):
        due = []
        # Only alerts with a channel told longer ago than the shortest repeat interval can owe a repeat.
        horizon = now - min(route.repeat_interval for route in routes)
        candidates = self.db.execute(
            "SELECT id, record FROM alerts WHERE status = 'firing' AND id IN "
            "(SELECT alert_id FROM threads WHERE resolved = 0 AND notified_at <= ?)", (horizon,)).fetchall()
        for alert_id, text in candidates:
            record = json.loads(text)
            threads = self._threads(alert_id)
            found = plan_repeats(record, threads, routes, now)
            if found:
                self._save(alert_id, threads, found, now)
                due.extend(found)
        return due

    def last_change(self):
        """The newest updated_at of a stored alert record (epoch s), or None when nothing is stored."""
        return self.db.execute("SELECT MAX(updated_at) FROM alerts").fetchone()[0]

    def open_alerts(self):
        """The records of the alerts stored as firing."""
        return [json.loads(text) for (text,) in self.db.execute("SELECT record FROM alerts WHERE status = 'firing'")]

    def _threads(self, alert_id):
        rows = self.db.execute("SELECT channel, route, repeat, level, notified_at, resolved FROM threads "
                               "WHERE alert_id = ?", (alert_id,))
        return {channel: Thread(channel, route, repeat, level, notified_at, bool(resolved))
                for channel, route, repeat, level, notified_at, resolved in rows}

    def _save(self, alert_id, threads, due, now):
        self.db.executemany(
            "INSERT OR REPLACE INTO threads (alert_id, channel, route, repeat, level, notified_at, resolved) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(alert_id, t.channel, t.route, t.repeat, t.level, t.notified_at, int(t.resolved)) for t in threads.values()])
        for notification in due:
            self._enqueue(notification, now)

    def _enqueue(self, notification, now):
        # One message per (channel, host) per group: a notification joins the group of its host that is still
        # gathering (one due later than now: a group is sent only once due), else opens one due group_wait from now.
        row = self.db.execute("SELECT MAX(due_at) FROM outbox WHERE channel = ? AND host_id = ? AND delivered_at IS NULL "
                              "AND due_at > ?", (notification.channel, notification.host_id, now)).fetchone()
        due_at = row[0] if row and row[0] is not None else now + notification.group_wait
        self.db.execute(
            "INSERT OR IGNORE INTO outbox (channel, key, alert_id, host_id, status, repeat, record, due_at, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (notification.channel, notification.key, notification.alert_id, notification.host_id, notification.status,
             notification.repeat, json.dumps(notification.record), due_at, now))

    # -- notifications out -----------------------------------------------------------------
    def due_groups(self, channel, now, limit, skip=()):
        """Up to `limit` groups due on channel: lists of Notification of one host, the longest due first.

        Hosts in `skip` (a message for them is on its way) are left for later."""
        skip = list(skip)
        hosts = [host for (host,) in self.db.execute(
            f"SELECT host_id FROM outbox WHERE delivered_at IS NULL AND channel = ? AND due_at <= ? "
            f"AND host_id NOT IN ({', '.join('?' * len(skip))}) GROUP BY host_id ORDER BY MIN(due_at) LIMIT ?",
            (channel, now, *skip, limit))]
        groups = []
        for host in hosts:
            rows = self.db.execute("SELECT key, alert_id, status, repeat, record FROM outbox WHERE delivered_at IS NULL "
                                   "AND channel = ? AND host_id = ? AND due_at <= ? ORDER BY due_at, created_at",
                                   (channel, host, now))
            groups.append([Notification(channel, key, alert_id, host, status, repeat, json.loads(record), 0.0)
                           for key, alert_id, status, repeat, record in rows])
        return groups

    def next_due(self):
        """The earliest due_at of anything not delivered, or None."""
        return self.db.execute("SELECT MIN(due_at) FROM outbox WHERE delivered_at IS NULL").fetchone()[0]

    def delivered(self, keys_by_channel, at):
        """Mark notifications ({channel: [key, ...]}) as accepted by their channel, in one transaction; returns how
        many were not marked before."""
        rows = [(at, channel, key) for channel, keys in keys_by_channel.items() for key in keys]

        def mark():
            return self.db.executemany("UPDATE outbox SET delivered_at = ? WHERE channel = ? AND key = ? "
                                       "AND delivered_at IS NULL", rows).rowcount
        return self._transaction(mark)

    def undelivered(self):
        """{channel: [key, ...]} of every notification not delivered yet."""
        keys = {}
        for channel, key in self.db.execute("SELECT channel, key FROM outbox WHERE delivered_at IS NULL"):
            keys.setdefault(channel, []).append(key)
        return keys

    def pending(self):
        """{channel: notifications not delivered yet}."""
        return dict(self.db.execute("SELECT channel, COUNT(*) FROM outbox WHERE delivered_at IS NULL GROUP BY channel"))

    def forget_old(self, now):
        """Drop resolved alerts and delivered notifications older than KEEP_SECONDS."""
        horizon = now - KEEP_SECONDS

        def forget():
            old = [alert_id for (alert_id,) in self.db.execute(
                "SELECT id FROM alerts WHERE status = 'resolved' AND COALESCE(updated_at, 0) < ?", (horizon,))]
            self.db.executemany("DELETE FROM threads WHERE alert_id = ?", [(alert_id,) for alert_id in old])
            self.db.executemany("DELETE FROM alerts WHERE id = ?", [(alert_id,) for alert_id in old])
            self.db.execute("DELETE FROM outbox WHERE delivered_at IS NOT NULL AND delivered_at < ?", (horizon,))
        self._transaction(forget)
