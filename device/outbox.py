"""The durable outbox: a press is on disk before the light says "sent".

(Over 300 lines: every operation has its disk path and its in-memory fallback
side by side, which is clearer kept together than split.)

One SQLite file with synchronous commits, private to the agent's user. It holds the device's alert
sequence counter (which survives reboots, so the server can tell a lost alert
from a quiet room), every alert the server has not yet confirmed, and the
alert currently open in this room (so that a press while it is open is
recorded as a re-press of it, not a new incident). An alert is unconfirmed
until the server's feedback arrives; the broker's PUBACK is not enough.

If the file is corrupt it is moved aside (kept for inspection) and a new one
is started. If the disk is full or read-only the outbox keeps working from
memory and says so through :attr:`Outbox.fault`, so the press is still sent
and the fault shows on the light and in the status.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
from datetime import datetime
from pathlib import Path

from device import private
from panicbutton.clock import Clock, SystemClock
from panicbutton.wire import Alert, AlertKind, new_alert_id

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (
    alert_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL UNIQUE,
    payload BLOB NOT NULL,
    confirmed INTEGER NOT NULL DEFAULT 0,
    closed INTEGER NOT NULL DEFAULT 0
);
"""

#: SQLite's names for a file that is not (or no longer) a database.
CORRUPT = ("SQLITE_NOTADB", "SQLITE_CORRUPT")
#: Closed alerts kept for the record on the unit; older ones are pruned.
KEEP_CLOSED = 50


@dataclasses.dataclass
class _Row:
    alert: Alert
    confirmed: bool = False
    closed: bool = False


class Outbox:
    """Alerts not yet confirmed by the server, and the room's open alert.

    Not thread-safe: the agent's own thread is its only user. ``clock`` gives each
    alert's ``pressed_at`` and dates a corrupt file moved aside (defaults to the
    real clocks).
    """

    def __init__(self, path: Path, *, clock: Clock | None = None) -> None:
        self.path = path
        self._clock: Clock = clock or SystemClock()
        self.fault: str | None = None
        self._memory: dict[str, _Row] = {}
        self._memory_seq = 0
        self._db: sqlite3.Connection | None = None
        try:
            self._db = self._open(path)
        except sqlite3.Error as exc:
            # NOTE: only a file that is not a database, or fails its check, is corrupt.
            # A full, read-only or locked disk is not: the file must stay where it is.
            if getattr(exc, "sqlite_errorname", "") in CORRUPT or "integrity" in str(exc):
                self._recover_corrupt(exc)
            else:
                self._go_to_memory(f"outbox {path} cannot be opened: {exc}")
        except OSError as exc:
            self._go_to_memory(f"outbox {path} cannot be opened: {exc}")

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        private.make_folder(path.parent)
        # NOTE: SQLite gives its -wal and -shm files the database file's mode, so a
        # database made private first keeps them private too (older ones are tightened).
        private.create(path)
        for suffix in ("-wal", "-shm"):
            private.tighten(Path(f"{path}{suffix}"))
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

    def _recover_corrupt(self, exc: Exception) -> None:
        """Move a corrupt file aside and start a new one; the fault stays reported."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(self._clock.time())}")
        try:
            for suffix in ("", "-wal", "-shm"):
                part = Path(str(self.path) + suffix)
                if part.exists():
                    part.rename(Path(str(aside) + suffix))
        except OSError as moved:  # a read-only file system: keep going from memory
            self._go_to_memory(
                f"outbox {self.path} is corrupt ({exc}) and cannot be moved aside: {moved.strerror}"
            )
            return
        self.fault = (
            f"outbox {self.path} was corrupt ({exc}); moved to {aside.name} and "
            "started anew (the sequence restarts at 1; the server records the reset)"
        )
        log.error("%s", self.fault)
        try:
            self._db = self._open(self.path)
        except (sqlite3.Error, OSError) as again:
            self._go_to_memory(f"outbox {self.path} cannot be opened: {again}")

    def _go_to_memory(self, reason: str) -> None:
        self.fault = reason
        log.error("%s; alerts are kept in memory until the disk is fixed", reason)
        if self._db is None and self.path.exists():
            # Opening for writing failed (full or read-only disk): read what it holds.
            try:
                self._db = sqlite3.connect(
                    f"file:{self.path}?mode=ro", uri=True, check_same_thread=False
                )
            except sqlite3.Error:
                self._db = None
        if self._db is not None:
            for row in self._read_rows(self._db):
                self._memory[row.alert.alert_id] = row
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
    def _read_rows(db: sqlite3.Connection, where: str = "1") -> list[_Row]:
        try:
            rows = db.execute(
                f"SELECT payload, confirmed, closed FROM alerts WHERE {where} ORDER BY seq"  # noqa: S608 -- fixed clauses only
            ).fetchall()
        except sqlite3.Error:
            return []
        return [_Row(Alert.from_json(p), bool(c), bool(x)) for p, c, x in rows]

    def _write(self, sql: str, args: tuple[object, ...]) -> bool:
        """Run one durable statement; on a disk error, fall back to memory and say so."""
        if self._db is None:
            return False
        try:
            self._db.execute(sql, args)
        except sqlite3.Error as exc:
            self._go_to_memory(f"outbox {self.path} cannot be written: {exc}")
            return False
        return True

    # -- the agent's operations ---------------------------------------------------
    def add(self, device_id: str, kind: AlertKind = AlertKind.PANIC) -> Alert:
        """Record a new press and return its alert, stored before this returns."""
        if self._db is not None:
            try:
                return self._add_durably(self._db, device_id, kind, self._clock.now())
            except sqlite3.Error as exc:
                self._go_to_memory(f"outbox {self.path} cannot be written: {exc}")
        self._memory_seq += 1
        alert = Alert(
            device_id=device_id,
            alert_id=new_alert_id(),
            seq=self._memory_seq,
            pressed_at=self._clock.now(),
            kind=kind,
        )
        self._memory[alert.alert_id] = _Row(alert)
        return alert

    @staticmethod
    def _add_durably(
        db: sqlite3.Connection, device_id: str, kind: AlertKind, pressed_at: datetime
    ) -> Alert:
        db.execute("BEGIN IMMEDIATE")
        try:
            seq = int(db.execute("SELECT seq FROM counter WHERE id = 1").fetchone()[0]) + 1
            alert = Alert(
                device_id=device_id,
                alert_id=new_alert_id(),
                seq=seq,
                pressed_at=pressed_at,
                kind=kind,
            )
            db.execute("UPDATE counter SET seq = ? WHERE id = 1", (seq,))
            db.execute(
                "INSERT INTO alerts (alert_id, seq, payload) VALUES (?, ?, ?)",
                (alert.alert_id, seq, alert.to_json()),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return alert

    def repress(self, alert_id: str) -> Alert | None:
        """Count one more press of an open alert; it is unconfirmed again until the server says."""
        row = self._row(alert_id)
        if row is None:
            return None
        alert = dataclasses.replace(row.alert, presses=row.alert.presses + 1)
        if alert_id in self._memory:
            self._memory[alert_id] = _Row(alert, confirmed=False, closed=row.closed)
        elif not self._write(
            "UPDATE alerts SET payload = ?, confirmed = 0 WHERE alert_id = ?",
            (alert.to_json(), alert_id),
        ):
            self._memory[alert_id] = _Row(alert)
        return alert

    def confirm(self, alert_id: str, presses: int | None = None) -> bool:
        """The server has this alert (with at least ``presses`` presses); True if it was pending."""
        row = self._row(alert_id)
        if row is None or row.confirmed or (presses is not None and presses < row.alert.presses):
            return False
        if alert_id in self._memory:
            row.confirmed = True
        else:
            self._write("UPDATE alerts SET confirmed = 1 WHERE alert_id = ?", (alert_id,))
        return True

    def close(self, alert_id: str, presses: int | None = None) -> bool:
        """The alert is resolved (after ``presses`` presses, the server's count): a press
        from now on starts a new alert. False, and the alert stays open and unconfirmed,
        when the unit holds more presses than that.

        NOTE: such a press happened after staff resolved, unheard by the unit; it must
        still reach the server (which reopens the incident for it), so it is not dropped.
        """
        row = self._row(alert_id)
        if row is not None and presses is not None and presses < row.alert.presses:
            return False
        if alert_id in self._memory:
            self._memory[alert_id].closed = True
            self._memory[alert_id].confirmed = True
            return True
        self._write("UPDATE alerts SET closed = 1, confirmed = 1 WHERE alert_id = ?", (alert_id,))
        self._write(
            "DELETE FROM alerts WHERE closed = 1 AND seq <= "
            "(SELECT seq FROM counter WHERE id = 1) - ?",
            (KEEP_CLOSED,),
        )
        return True

    def reopen(self, alert_id: str, presses: int) -> bool:
        """The server has reopened this resolved panic alert (a press it had not counted
        when staff resolved it): open again, so that a press from now on is a re-press
        of it, counted from ``presses`` (the server's count) if that is higher. True if
        it was closed here and is open now."""
        row = self._row(alert_id)
        if row is None or not row.closed or row.alert.kind is not AlertKind.PANIC:
            return False
        alert = dataclasses.replace(row.alert, presses=max(row.alert.presses, presses))
        if alert_id in self._memory or not self._write(
            "UPDATE alerts SET payload = ?, confirmed = 1, closed = 0 WHERE alert_id = ?",
            (alert.to_json(), alert_id),
        ):
            self._memory[alert_id] = _Row(alert, confirmed=True)
        return True

    def _row(self, alert_id: str) -> _Row | None:
        if alert_id in self._memory:
            return self._memory[alert_id]
        if self._db is None:
            return None
        try:
            found = self._db.execute(
                "SELECT payload, confirmed, closed FROM alerts WHERE alert_id = ?", (alert_id,)
            ).fetchone()
        except sqlite3.Error:
            return None
        return _Row(Alert.from_json(found[0]), bool(found[1]), bool(found[2])) if found else None

    def _rows(self) -> list[_Row]:
        stored = self._read_rows(self._db) if self._db is not None else []
        return sorted([*stored, *self._memory.values()], key=lambda r: r.alert.seq)

    def pending(self) -> list[Alert]:
        """Unconfirmed alerts, oldest first."""
        return [r.alert for r in self._rows() if not r.confirmed]

    def open_alert(self) -> Alert | None:
        """The newest panic alert not yet resolved, if any: a press now is a re-press of it."""
        rows = [r for r in self._rows() if not r.closed and r.alert.kind is AlertKind.PANIC]
        return rows[-1].alert if rows else None

    def is_test(self, alert_id: str) -> bool:
        row = self._row(alert_id)
        return row is not None and row.alert.kind is AlertKind.TEST

    def depth(self) -> int:
        return len(self.pending())

    def shutdown(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
