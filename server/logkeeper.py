"""Keeps the incident log: signed checkpoints, heartbeats, nightly self-check, retention.

One thread per server instance. It signs a checkpoint (C2SP tlog-checkpoint,
Ed25519) soon after every commit that appended to the log (bursts share one),
stores it in ``log_checkpoints`` and appends it to a file outside the database.
Every 15 minutes it appends a ``log.heartbeat`` entry even when nothing
happened, so that a quiet night can be proven. Once a day it verifies the whole
stored log with the standalone verifier's code and records the result as a
``log.verified`` entry; every hour it purges personal data past retention.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from panicbutton import canonical, ledger, verify
from server import audit, personal
from server.models import LogCheckpoint, LogEntry
from server.personal import Retention
from server.site import Site

log = logging.getLogger(__name__)

HEARTBEAT = timedelta(minutes=15)
SELF_VERIFY = timedelta(hours=24)
PURGE = timedelta(hours=1)
RETRY = timedelta(minutes=1)
#: Bytes read from the end of the checkpoint file at start (a few thousand checkpoints).
KEPT_TAIL = 1 << 20


def load_signer(path: Path) -> ledger.Signer:
    """The log's signing key from ``path``; ValueError says what is wrong and what to do."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(
            f"PANICBUTTON_LOG_KEY_FILE: cannot read {path} ({exc.strerror}); "
            "make one with `panicbutton audit keygen --out FILE`"
        ) from None
    if mode & 0o077:
        raise ValueError(
            f"PANICBUTTON_LOG_KEY_FILE: {path} is readable by other users; chmod 600 it"
        )
    try:
        return ledger.Signer.parse(text)
    except ledger.LogFormatError as exc:
        raise ValueError(f"PANICBUTTON_LOG_KEY_FILE: {path}: {exc}") from None


def latest_checkpoint(session: Session) -> LogCheckpoint | None:
    return session.scalars(
        select(LogCheckpoint).order_by(LogCheckpoint.size.desc(), LogCheckpoint.id.desc())
    ).first()


def stored_entries(session: Session, batch: int = 5000) -> Any:
    """Every stored entry's bytes, in order, read in batches."""
    start = 0
    while True:
        rows = session.scalars(
            select(LogEntry.body).where(LogEntry.n >= start).order_by(LogEntry.n).limit(batch)
        ).all()
        yield from rows
        if len(rows) < batch:
            return
        start += batch


def stored_notes(session: Session) -> list[str]:
    return list(
        session.scalars(
            select(LogCheckpoint.note).order_by(LogCheckpoint.size, LogCheckpoint.id)
        ).all()
    )


def verify_stored(
    session: Session, key: ledger.VerifierKey, trusted: ledger.Checkpoint | None = None
) -> verify.Report:
    """Verify the stored log as an inspector's verifier would; raises VerificationError."""
    report, parsed = verify.verify_full(
        stored_entries(session), stored_notes(session), key, trusted=trusted
    )
    verify.check_meaning(parsed, report, full=True)
    return report


def describe_site(site: Site) -> dict[str, Any]:
    """The site file as the log records it (ids, roles, rules); names and numbers are
    left to personal data."""
    duty = site.duty
    return {
        "rooms": [{"id": r.id, "device": r.device} for r in site.rooms],
        "staff": [{"id": s.id, "role": s.role, "language": str(s.language)} for s in site.staff],
        "duty": {
            "always": list(duty.always),
            "default": list(duty.default),
            "shifts": [
                {
                    "staff": sh.staff,
                    "days": sorted(sh.days),
                    "start": sh.start.strftime("%H:%M"),
                    "end": sh.end.strftime("%H:%M"),
                }
                for sh in duty.shifts
            ],
            "gap_warning": duty.gap_warning,
            "takeover_minutes": round(duty.takeover_hours * 60),
        },
        "escalation": {
            "steps": [
                {"after": st.after, "who": str(st.who), "channels": list(st.channels)}
                for st in site.escalation.steps
            ],
            "repeat_every": site.escalation.repeat_every,
            "follow_up_after": site.escalation.follow_up_after,
            "offline_repeat": site.escalation.offline_repeat,
        },
    }


def record_config(
    session: Session, *, site: Site, retention: Retention, now: datetime, digest_key: bytes
) -> bool:
    """Append ``config.changed`` when the site (roster included) differs from the last one
    recorded; True if it did. ``digest_key`` keys the digest that tells (a secret)."""
    described = describe_site(site)
    private: dict[str, Any] = {
        "site": site.name,
        "rooms": {r.id: r.label for r in site.rooms},
        "staff": {s.id: {"name": s.name, "phone": s.phone} for s in site.staff},
    }
    # NOTE: keyed, not a plain hash: the digest stays in the log for good, and a plain
    # hash of names and numbers would let anyone confirm a guessed roster after the
    # names and numbers themselves were purged.
    digest = hmac.new(
        digest_key,
        canonical.dumps({"public": described, "private": private, "retention": asdict(retention)}),
        hashlib.sha256,
    ).hexdigest()
    last = session.scalars(
        select(LogEntry.body)
        .where(LogEntry.type == "config.changed")
        .order_by(LogEntry.n.desc())
        .limit(1)
    ).first()
    if last is not None and json.loads(last)["data"]["site_sha256"] == digest:
        return False
    audit.audit(
        session,
        at=now,
        type="config.changed",
        site_sha256=digest,
        retention=asdict(retention),
        **described,
    )
    # One entry per member of staff (what their own access request discloses): their
    # role and language, and a commitment to their name and number kept apart.
    for member in described["staff"]:
        ref, commitment = personal.keep(
            session,
            kind="roster",
            value=private["staff"][member["id"]],
            subjects=[member["id"]],
            now=now,
            retention=retention,
        )
        audit.audit(
            session,
            at=now,
            type="config.staff",
            staff=member["id"],
            role=member["role"],
            language=member["language"],
            ref=ref,
            commitment=commitment,
        )
    return True


class LogKeeper:
    def __init__(
        self,
        *,
        engine: Engine,
        sessions: sessionmaker[Session],
        signer: ledger.Signer,
        checkpoint_file: Path | None,
        clock: Any,
        retention: Retention,
        heartbeat: timedelta = HEARTBEAT,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        """``on_failure`` is called (on the keeper's thread) when a self-check fails."""
        self._engine = engine
        self._sessions = sessions
        self.signer = signer
        self._file = checkpoint_file
        self._clock = clock
        self._retention = retention
        self._heartbeat = heartbeat
        self._on_failure = on_failure
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._remove: Any = None
        self._signed = -1
        self._kept: ledger.Checkpoint | None = None
        self._signing = threading.Lock()
        self._next_purge = self._next_verify = self._next_beat = None  # type: datetime | None

    # -- life ---------------------------------------------------------------------------
    def start(self) -> None:
        now = self._clock()
        with self._sessions() as s:
            cp = latest_checkpoint(s)
            self._signed = cp.size if cp else -1
            self._next_beat = self._last(s, "log.heartbeat", now, self._heartbeat)
            self._next_verify = self._last(
                s, "log.verified", now + timedelta(minutes=5), SELF_VERIFY
            )
        self._next_purge = now
        # NOTE: the checkpoint file outlives a database restored from an older backup.
        # Before signing anything, the first pass checks the database still holds what
        # the file's last checkpoint covers (signing first would fork the log quietly).
        self._kept = self._last_kept()
        if self._kept is not None:
            self._next_verify = now
        self._remove = audit.on_append(self._engine, self.poke)
        self._thread = threading.Thread(target=self._run, name="log-keeper", daemon=True)
        self._thread.start()
        self.poke()  # the first pass checks, then signs, at once

    def stop(self) -> None:
        if self._remove:
            self._remove()
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)
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
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                self._tick()
            except Exception:
                log.exception("log keeper pass failed; retrying in a second")

    def _tick(self) -> None:
        # NOTE: each duty on its own: a self-check that breaks must not stop the
        # signing and the heartbeats (and is not retried every second).
        now = self._clock()
        if self._next_verify and now >= self._next_verify:
            try:
                self.self_verify(now, trusted=self._kept)
            except Exception:
                log.exception("log keeper: the self-check could not run; again in a minute")
                self._next_verify = now + RETRY
            else:
                self._kept = None
                self._next_verify = now + SELF_VERIFY
        if self._next_beat and now >= self._next_beat:
            self._duty("heartbeat", lambda: self.heartbeat(now))
        self._duty("signing", self.sign)
        if self._next_purge and now >= self._next_purge:
            self._next_purge = now + PURGE
            self._duty("retention", lambda: self.purge(now))

    @staticmethod
    def _duty(name: str, work: Any) -> None:
        try:
            work()
        except Exception:
            log.exception("log keeper: the %s failed; the other duties go on", name)

    def purge(self, now: datetime) -> int:
        with self._sessions.begin() as s:
            gone = personal.purge_expired(s, now=now, retention=self._retention)
        if gone:
            log.info("purged %d personal data row(s) past retention", gone)
        return gone

    # -- work ---------------------------------------------------------------------------
    def heartbeat(self, now: datetime) -> None:
        with self._sessions.begin() as s:
            # Another instance may have written one already: one per period is enough.
            last = s.scalar(select(func.max(LogEntry.at)).where(LogEntry.type == "log.heartbeat"))
            if last is None or now - last >= self._heartbeat - timedelta(minutes=1):
                audit.audit(s, at=now, type="log.heartbeat")
        self._next_beat = now + self._heartbeat

    def sign(self) -> ledger.Checkpoint | None:
        """Sign the log's head if it grew since the last checkpoint; returns it."""
        with self._signing:  # the keeper's thread and an export's may both sign
            return self._sign()

    def _sign(self) -> ledger.Checkpoint | None:
        now = self._clock()
        with self._sessions.begin() as s:
            head = audit.frontier(s.connection())
            if head.size <= self._signed:
                return None
            cp = self.signer.sign_checkpoint(head.size, head.root())
            s.add(LogCheckpoint(size=cp.size, at=now, note=cp.note))
        self._signed = cp.size
        self._append_file(cp)
        return cp

    def _append_file(self, cp: ledger.Checkpoint) -> None:
        if self._file is None:
            return
        line = json.dumps(cp.note).encode() + b"\n"
        try:
            fd = os.open(self._file, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                end = os.lseek(fd, 0, os.SEEK_END)
                if end and os.pread(fd, 1, end - 1) != b"\n":
                    line = b"\n" + line  # an earlier write was cut short: start afresh
                while line:
                    line = line[os.write(fd, line) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.error(
                "could not append checkpoint %d to %s (%s): the database copy is kept; "
                "free space or fix permissions",
                cp.size,
                self._file,
                exc.strerror,
            )

    def _last_kept(self) -> ledger.Checkpoint | None:
        """The largest valid checkpoint among the file's last lines (not merely the last
        line: after a restore and a restart the file's end holds the smaller sizes)."""
        if self._file is None:
            return None
        try:
            with self._file.open("rb") as f:
                start = max(0, f.seek(0, os.SEEK_END) - KEPT_TAIL)
                f.seek(start)
                tail = f.read().splitlines()[1 if start else 0 :]  # the first may be cut
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.error("cannot read %s (%s): the log is not compared with it", self._file, exc)
            return None
        best: ledger.Checkpoint | None = None
        bad = 0
        for line in filter(None, tail):
            try:
                cp = ledger.open_checkpoint(json.loads(line), self.signer.verifier)
            except (ValueError, TypeError, ledger.LogFormatError):
                bad += 1
                continue
            if best is None or cp.size > best.size:
                best = cp
        if bad:
            log.error(
                "%s: %d line(s) are not checkpoints signed by this log's key", self._file, bad
            )
        return best

    def self_verify(
        self, now: datetime, trusted: ledger.Checkpoint | None = None
    ) -> verify.Report | None:
        """Verify the stored log (against ``trusted`` too, when given) and record the
        result as a ``log.verified`` entry; None (and an error in the server log) if it
        failed."""
        report: verify.Report | None = None
        with self._sessions() as s:
            try:
                report = verify_stored(s, self.signer.verifier, trusted)
            except verify.VerificationError as exc:
                log.error(
                    "the incident log FAILED its own verification: %s. If the database was "
                    "restored from a backup, the entries after it are lost; keep the "
                    "checkpoint file and tell whoever audits this log.",
                    exc,
                )
                if self._on_failure is not None:
                    self._on_failure()
        result: dict[str, Any] = {"result": "failed", "size": None, "root": None, "findings": 0}
        if report is not None:
            result = {
                "result": "ok",
                "size": report.size,
                "root": report.root.hex(),
                "findings": len(report.findings),
            }
        with self._sessions.begin() as s:
            audit.audit(s, at=now, type="log.verified", **result)
        return report
