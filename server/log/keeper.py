"""Keeps the incident log: signed checkpoints, heartbeats, nightly self-check, retention.

One thread per server instance, doing its duties while ``keeps()`` says this
instance is the keeper (with several instances on PostgreSQL, the holder of an
advisory lock: :class:`server.cluster.KeeperLock`; another takes over when the
holder dies, from the last checkpoint, checking the whole log first). It signs a
checkpoint (C2SP tlog-checkpoint, Ed25519) soon after every commit that appended
to the log, stores it in ``log_checkpoints`` and appends it to a file outside the
database. A burst shares one: the keeper signs once the log has been quiet for
:data:`SIGN_QUIET`, and never later than :data:`SIGN_WITHIN` after the first commit
it has not signed (so a storm of alarms is signed once a second, not once per
alarm, and a single press's pages are not slowed by signing its entries).
Every 15 minutes it appends a ``log.heartbeat`` entry even when nothing
happened, so that a quiet night can be proven. Once a day it verifies the whole
stored log with the standalone verifier's code and records the result as a
``log.verified`` entry; every hour it purges personal data past retention.

Nothing is signed before the log is proven consistent with every checkpoint the
keeper knows (those in the database and in the file's last megabyte): once per
process by checking the whole log (as the verifier does), then before each
signing by an RFC 9162 consistency proof from the last proven tree (whose edge it
keeps in memory) to the stored head, over the entries appended since. A log that
fails is never signed again by this process: the failure is recorded
(``log.verified`` failed) and the managers are texted, again every
hour until someone acknowledges it
(``panicbutton audit acknowledge-failure``, a ``log.failure_acknowledged`` entry).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import suppress as contextlib_suppress
from datetime import datetime, timedelta
from pathlib import Path
from typing import NoReturn

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.log import checkpoints, verdict
from server.errors import ServerError
from server.log import append, personal
from server.log.failure import Reminder
from server.log.personal import Retention
from server.log.signing import CheckpointFile
from server.log.stored import Proven, latest_checkpoint, verify_appended, verify_stored
from server.models import LogCheckpoint, LogEntry

log = logging.getLogger(__name__)

HEARTBEAT = timedelta(minutes=15)
SELF_VERIFY = timedelta(hours=24)
PURGE = timedelta(hours=1)
RETRY = timedelta(minutes=1)
#: Seconds without a new commit before the keeper signs what was appended.
SIGN_QUIET = 0.25
#: Seconds from the first commit not yet signed to its checkpoint, at most (plus the
#: signing itself), however busy the log.
SIGN_WITHIN = 1.0


class LogFailedError(ServerError, RuntimeError):
    """The stored log is not consistent with its signed checkpoints: nothing is signed."""


class LogKeeper:
    """The log's keeper on its own thread (``start``/``stop``); ``sign`` may also be called
    from elsewhere (an export signs the head first)."""

    def __init__(
        self,
        *,
        engine: Engine,
        sessions: sessionmaker[Session],
        signer: checkpoints.Signer,
        checkpoint_file: Path | None,
        clock: Callable[[], datetime],
        retention: Retention,
        heartbeat: timedelta = HEARTBEAT,
        on_failure: Callable[[], None] | None = None,
        purge_registers: Callable[[Session, datetime], int] | None = None,
        keeps: Callable[[], bool] = lambda: True,
    ) -> None:
        """``on_failure`` is called (on the keeper's thread) when the log fails a check,
        and again every ``server.log.failure.FAILURE_REPEAT`` until the failure is acknowledged.
        ``purge_registers(session, now)`` deletes the rows of the presence and violence
        registers past their retention and says how many (``server.app`` builds it)."""
        self._engine = engine
        self._keeps = keeps
        self._keeping = False
        self.sessions = sessions
        self.signer = signer
        self._file = CheckpointFile(checkpoint_file, signer.verifier)
        self._clock = clock
        self._retention = retention
        self._heartbeat = heartbeat
        self._purge_registers = purge_registers
        self._reminder = Reminder(sessions, on_failure)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._remove: Callable[[], None] | None = None
        self._signed = -1
        self._signing = threading.Lock()
        #: The log proven consistent with every checkpoint known, so far.
        self._proven: Proven | None = None
        #: Why the log failed, if it did.
        self.failure: str | None = None
        self._next_purge = self._next_verify = self._next_beat = None  # type: datetime | None

    @property
    def reminding(self) -> bool:
        """True while the managers are texted about a failure nobody acknowledged yet."""
        return self._reminder.active

    # -- life ---------------------------------------------------------------------------
    def start(self) -> None:
        self._catch_up()
        self._remove = append.on_append(self._engine, self.poke)
        self._thread = threading.Thread(target=self._run, name="log-keeper", daemon=True)
        self._thread.start()
        self.poke()  # the first pass checks, then signs, at once

    def _catch_up(self) -> None:
        """Read where the log's duties stand (at start, and when this instance becomes
        the keeper after another: it signed and beat meanwhile)."""
        now = self._clock()
        with self.sessions() as s:
            cp = latest_checkpoint(s)
            self._signed = cp.size if cp else -1
            self._next_beat = self._last(s, "log.heartbeat", now, self._heartbeat)
            self._next_verify = self._last(
                s, "log.verified", now + timedelta(minutes=5), SELF_VERIFY
            )
        self._next_purge = now
        # NOTE: the checkpoint file outlives a database restored from an older backup or
        # rewritten. The first pass checks the whole log against the file and the
        # database's checkpoints before anything is signed, and records the result.
        if self._file.read(whole=True):
            self._next_verify = now

    def stop(self) -> None:
        if self._remove:
            self._remove()
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)
        if self._keeper():  # another instance keeps the log otherwise
            with contextlib_suppress(LogFailedError):
                self.sign()

    def poke(self) -> None:
        """Something was appended: sign a checkpoint soon."""
        self._wake.set()

    @staticmethod
    def _last(s: Session, type_: str, default: datetime, every: timedelta) -> datetime:
        last = s.scalar(select(func.max(LogEntry.at)).where(LogEntry.type == type_))
        return last + every if last else default

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._wake.wait(1.0):
                self._settle()
            self._wake.clear()
            try:
                if not self._keeper():
                    continue
                self._tick()
            except Exception:
                log.exception("log keeper pass failed; retrying in a second")

    def _keeper(self) -> bool:
        """Whether this instance keeps the log now; on becoming the keeper, catch up."""
        keeping = self._keeps()
        if keeping and not self._keeping:
            self._proven = None  # another keeper appended and signed: prove it all again
            self._catch_up()
        self._keeping = keeping
        return keeping

    def _settle(self) -> None:
        """Poked: wait until the log has been quiet for SIGN_QUIET, but no longer than
        SIGN_WITHIN from now, so that a burst of commits shares one checkpoint."""
        deadline = time.monotonic() + SIGN_WITHIN
        while not self._stop.is_set():
            self._wake.clear()
            left = deadline - time.monotonic()
            if left <= 0 or not self._wake.wait(min(SIGN_QUIET, left)):
                return

    def _tick(self) -> None:
        # NOTE: each duty on its own: a self-check that breaks must not stop the
        # heartbeats (and is not retried every second).
        now = self._clock()
        if self._next_verify and now >= self._next_verify:
            try:
                self.self_verify(now)
            except Exception:
                log.exception("log keeper: the self-check could not run; again in a minute")
                self._next_verify = now + RETRY
            else:
                self._next_verify = now + SELF_VERIFY
        if self._next_beat and now >= self._next_beat:
            self._duty("heartbeat", lambda: self.heartbeat(now))
        if self.failure is None:
            self._duty("signing", self._sign_quietly)
        else:
            self._duty("failure reminder", lambda: self._reminder.remind(now))
        if self._next_purge and now >= self._next_purge:
            self._next_purge = now + PURGE
            self._duty("retention", lambda: self.purge(now))

    def _sign_quietly(self) -> None:
        with contextlib_suppress(LogFailedError):  # recorded and told where it was found
            self.sign()

    @staticmethod
    def _duty(name: str, work: Callable[[], object]) -> None:
        try:
            work()
        except Exception:
            log.exception("log keeper: the %s failed; the other duties go on", name)

    def purge(self, now: datetime) -> int:
        with self.sessions.begin() as s:
            gone = personal.purge_expired(s, now=now, retention=self._retention)
            rows = self._purge_registers(s, now) if self._purge_registers else 0
        if gone:
            log.info("purged %d personal data row(s) past retention", gone)
        if rows:
            # NOTE: no log entry: the log never referred to these rows (only their counts).
            log.info("deleted %d register row(s) (presence, violence) past retention", rows)
        return gone

    # -- work ---------------------------------------------------------------------------
    def heartbeat(self, now: datetime) -> None:
        with self.sessions.begin() as s:
            # Another instance may have written one already: one per period is enough.
            last = s.scalar(select(func.max(LogEntry.at)).where(LogEntry.type == "log.heartbeat"))
            if last is None or now - last >= self._heartbeat - timedelta(minutes=1):
                append.audit(s, at=now, type="log.heartbeat")
        self._next_beat = now + self._heartbeat

    def sign(self) -> checkpoints.Checkpoint | None:
        """Sign the log's head if it grew since the last checkpoint; returns it. Raises
        LogFailedError (nothing signed) when the log is not proven consistent with every
        checkpoint known."""
        with self._signing:  # the keeper's thread and an export's may both sign
            return self._sign()

    def _sign(self) -> checkpoints.Checkpoint | None:
        if self.failure is not None:
            raise LogFailedError(self.failure)
        now = self._clock()
        # NOTE: nothing is signed before the head is proven an extension of every
        # checkpoint known; a failure is recorded (outside these transactions) and raised.
        try:
            proven = self._proven
            if proven is None:
                with self.sessions() as s:
                    proven = Proven.of(self._establish(s, self._file.read(whole=True)))
            # The file before the database: a checkpoint another process wrote there
            # covers entries already committed, so the head read next holds them.
            kept = self._file.read(whole=False)
            with self.sessions.begin() as s:
                self._proven, head = verify_appended(s, proven, self.signer.verifier, kept)
                if head.size <= self._signed:
                    return None
                cp = self.signer.sign_checkpoint(head.size, head.root())
                s.add(LogCheckpoint(size=cp.size, at=now, note=cp.note))
        except verdict.VerificationError as exc:
            self._fail(str(exc))
        self._signed = cp.size
        self._file.append(cp)
        return cp

    # -- proving the log before signing -------------------------------------------------
    def _establish(self, s: Session, kept: list[checkpoints.Checkpoint]) -> verdict.Report:
        """Check the whole stored log against every checkpoint known (what the verifier
        does); from then on, only what is appended needs checking."""
        report = verify_stored(s, self.signer.verifier, kept=kept)
        self._proven = Proven.of(report)
        return report

    def _fail(self, reason: str) -> NoReturn:
        """Record the failure once, tell the managers, and raise LogFailedError."""
        now = self._clock()
        self.failure, self._proven = reason, None
        log.error(
            "the incident log FAILED its check: %s. Nothing more is signed. If the "
            "database was restored from a backup, the entries after it are lost; keep the "
            "checkpoint file and tell whoever audits this log. Acknowledge with "
            "`panicbutton audit acknowledge-failure` to stop the texts.",
            reason,
        )
        with self.sessions.begin() as s:
            append.audit(
                s, at=now, type="log.verified", result="failed", size=None, root=None, findings=0
            )
        self._reminder.failed(now)
        raise LogFailedError(reason)

    def self_verify(self, now: datetime) -> verdict.Report | None:
        """Verify the whole stored log against every checkpoint known (the database's and
        the file's) and record the result as a ``log.verified`` entry; None if it failed
        (recorded, the managers told, nothing signed from then on)."""
        with self._signing:
            if self.failure is not None:
                return None
            try:
                with self.sessions() as s:
                    report = self._establish(s, self._file.read(whole=True))
            except verdict.VerificationError as exc:
                with contextlib_suppress(LogFailedError):
                    self._fail(str(exc))
                return None
        with self.sessions.begin() as s:
            append.audit(
                s,
                at=now,
                type="log.verified",
                result="ok",
                size=report.size,
                root=report.root.hex(),
                findings=len(report.findings),
            )
        return report
