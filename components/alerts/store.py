"""The alert keeper's disk: alert records, silences and what it knows of each host, in one SQLite file (WAL).

Records are kept whole as JSON beside the columns the keeper looks them up by, so a record read back is the one
that was published. Writes are batched: `commit()` makes them durable (the keeper commits before it answers an
ack or a silence, and within its flush interval otherwise).
"""

import json
import sqlite3
from pathlib import Path

from components.mesh.errors import ConfigError

STORE_FILE = "alerts.sqlite3"
RESOLVED_KEPT_SECONDS = 7 * 24 * 3600.0  # resolved alerts and expired silences older than this are deleted at start
SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (id TEXT PRIMARY KEY, status TEXT NOT NULL, updated_at REAL NOT NULL, record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS alerts_status ON alerts (status, updated_at);
CREATE TABLE IF NOT EXISTS silences (id TEXT PRIMARY KEY, state TEXT NOT NULL, created_at REAL NOT NULL,
                                     silence TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS hosts (host_id TEXT PRIMARY KEY, boot_time REAL, presence TEXT);
"""


class AlertStore:
    """SQLite under the data directory: upserts of whole records, read back at start."""

    def __init__(self, data_dir):
        directory = Path(data_dir)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self.path = directory / STORE_FILE
            # The keeper runs in one thread (the reactor's); a second keeper on the same directory is a second process.
            self.db = sqlite3.connect(self.path, timeout=5.0, isolation_level="DEFERRED")
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            self.db.commit()
        except (OSError, sqlite3.Error) as error:
            raise ConfigError(f"cannot open the alert store in {directory}: {error}") from error
        self.dirty = False

    def save_alert(self, record):
        """Upsert one alert record (durable at the next commit)."""
        self.db.execute("INSERT INTO alerts (id, status, updated_at, record) VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE "
                        "SET status = excluded.status, updated_at = excluded.updated_at, record = excluded.record",
                        (record["id"], record["status"], record["updated_at"], json.dumps(record)))
        self.dirty = True

    def save_silence(self, silence):
        """Upsert one silence (durable at the next commit)."""
        self.db.execute("INSERT INTO silences (id, state, created_at, silence) VALUES (?, ?, ?, ?) ON CONFLICT(id) DO "
                        "UPDATE SET state = excluded.state, silence = excluded.silence",
                        (silence["id"], silence["state"], silence["created_at"], json.dumps(silence)))
        self.dirty = True

    def save_host(self, host_id, boot_time=None, presence=None):
        """Remember a host's boot time and presence (DOWN, OFFLINE or UP); None leaves a value as it was."""
        self.db.execute("INSERT INTO hosts (host_id, boot_time, presence) VALUES (?, ?, ?) ON CONFLICT(host_id) DO UPDATE "
                        "SET boot_time = coalesce(excluded.boot_time, boot_time), "
                        "presence = coalesce(excluded.presence, presence)", (host_id, boot_time, presence))
        self.dirty = True

    def commit(self):
        """Make every write so far durable."""
        if self.dirty:
            self.db.commit()
            self.dirty = False

    def load(self, now, resolved_limit):
        """(alert records: every open one and the newest `resolved_limit` resolved, oldest first; silences;
        {host_id: (boot_time, presence)}) as stored, after deleting what is too old."""
        horizon = now - RESOLVED_KEPT_SECONDS
        self.db.execute("DELETE FROM alerts WHERE status = 'resolved' AND updated_at < ?", (horizon,))
        self.db.execute("DELETE FROM silences WHERE state = 'expired' AND created_at < ?", (horizon,))
        self.db.commit()
        resolved = self.db.execute("SELECT record FROM alerts WHERE status = 'resolved' ORDER BY updated_at DESC LIMIT ?",
                                   (resolved_limit,)).fetchall()
        records = [json.loads(row[0]) for row in reversed(resolved)]
        records += [json.loads(row[0]) for row in self.db.execute("SELECT record FROM alerts WHERE status != 'resolved'")]
        silences = [json.loads(row[0]) for row in self.db.execute("SELECT silence FROM silences ORDER BY created_at")]
        hosts = {row[0]: (row[1], row[2]) for row in self.db.execute("SELECT host_id, boot_time, presence FROM hosts")}
        return records, silences, hosts

    def close(self):
        """Commit and close the file."""
        self.commit()
        self.db.close()
