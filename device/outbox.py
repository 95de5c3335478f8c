"""The durable outbox: a press is on disk before the light says "sent".

One SQLite file with synchronous commits. It holds the device's alert
sequence counter (which survives reboots, so the server can tell a lost alert
from a quiet room) and every alert the server has not yet confirmed. An alert
leaves the outbox only when the server's ``received`` feedback arrives; the
broker's PUBACK is not enough.

If the disk is full or read-only the outbox keeps working from memory and says
so through :attr:`Outbox.fault`, so the press is still sent and the fault is
shown on the light and in the status.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from panicbutton.wire import Alert, AlertKind, new_alert_id, now_utc

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pending (
    alert_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL UNIQUE,
    payload BLOB NOT NULL
);
"""


class Outbox:
    """Alerts not yet confirmed by the server, oldest first.

    Not thread-safe: the agent's own thread is its only user.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fault: str | None = None
        self._memory: dict[str, Alert] = {}
        self._memory_seq = 0
        self._db: sqlite3.Connection | None = None
        try:
            self._db = self._open(path)
        except (sqlite3.Error, OSError) as exc:
            self._go_to_memory(f"outbox {path} cannot be opened: {exc}")

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            # NOTE: synchronous=FULL: the commit is on the disk before add() returns,
            # so a power cut right after the light says "sent" loses nothing.
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            db.execute("INSERT OR IGNORE INTO counter (id, seq) VALUES (1, 0)")
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("integrity check failed")
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _go_to_memory(self, reason: str) -> None:
        self.fault = reason
        if self._db is not None:
            for alert in self._read_pending(self._db):
                self._memory[alert.alert_id] = alert
            self._memory_seq = max(self._memory_seq, self._read_seq(self._db))
            self._db.close()
            self._db = None

    @staticmethod
    def _read_seq(db: sqlite3.Connection) -> int:
        try:
            return int(db.execute("SELECT seq FROM counter WHERE id = 1").fetchone()[0])
        except sqlite3.Error:
            return 0

    @staticmethod
    def _read_pending(db: sqlite3.Connection) -> list[Alert]:
        try:
            rows = db.execute("SELECT payload FROM pending ORDER BY seq").fetchall()
        except sqlite3.Error:
            return []
        return [Alert.from_json(row[0]) for row in rows]

    def add(self, device_id: str, kind: AlertKind = AlertKind.PANIC) -> Alert:
        """Record a new press and return its alert, stored before this returns."""
        if self._db is not None:
            try:
                return self._add_durably(self._db, device_id, kind)
            except sqlite3.Error as exc:
                self._go_to_memory(f"outbox {self.path} cannot be written: {exc}")
        self._memory_seq += 1
        alert = Alert(
            device_id=device_id,
            alert_id=new_alert_id(),
            seq=self._memory_seq,
            pressed_at=now_utc(),
            kind=kind,
        )
        self._memory[alert.alert_id] = alert
        return alert

    @staticmethod
    def _add_durably(db: sqlite3.Connection, device_id: str, kind: AlertKind) -> Alert:
        db.execute("BEGIN IMMEDIATE")
        try:
            seq = int(db.execute("SELECT seq FROM counter WHERE id = 1").fetchone()[0]) + 1
            alert = Alert(
                device_id=device_id,
                alert_id=new_alert_id(),
                seq=seq,
                pressed_at=now_utc(),
                kind=kind,
            )
            db.execute("UPDATE counter SET seq = ? WHERE id = 1", (seq,))
            db.execute(
                "INSERT INTO pending (alert_id, seq, payload) VALUES (?, ?, ?)",
                (alert.alert_id, seq, alert.to_json()),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return alert

    def confirm(self, alert_id: str) -> bool:
        """Drop an alert the server has confirmed; True if it was pending."""
        if alert_id in self._memory:
            del self._memory[alert_id]
            return True
        if self._db is None:
            return False
        try:
            cur = self._db.execute("DELETE FROM pending WHERE alert_id = ?", (alert_id,))
        except sqlite3.Error as exc:
            # The server has the alert; failing to forget it only means one more resend.
            self.fault = f"outbox {self.path} cannot be written: {exc}"
            return False
        return cur.rowcount > 0

    def pending(self) -> list[Alert]:
        """Unconfirmed alerts, oldest first."""
        stored = self._read_pending(self._db) if self._db is not None else []
        return sorted([*stored, *self._memory.values()], key=lambda a: a.seq)

    def depth(self) -> int:
        return len(self.pending())

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
