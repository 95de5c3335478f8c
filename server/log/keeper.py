"""Keeps the incident log: signed checkpoints, heartbeats, nightly self-check, retention.

One thread per server instance. It signs a checkpoint (C2SP tlog-checkpoint,
Ed25519) soon after every commit that appended to the log (bursts share one),
stores it in ``log_checkpoints`` and appends it to a file outside the database.
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
``FAILURE_REPEAT`` until someone acknowledges it
(``panicbutton audit acknowledge-failure``, a ``log.failure_acknowledged`` entry).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
from collections.abc import Callable
from contextlib import suppress as contextlib_suppress
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.log import canonical, checkpoints, integrity, meaning, merkle, spec, verdict
from server.log import append, personal
from server.log.personal import Retention
from server.models import LogCheckpoint, LogEntry
from server.site import Site

log = logging.getLogger(__name__)

HEARTBEAT = timedelta(minutes=15)
SELF_VERIFY = timedelta(hours=24)
PURGE = timedelta(hours=1)
RETRY = timedelta(minutes=1)
#: Bytes read from the end of the checkpoint file at start (a few thousand checkpoints).
KEPT_TAIL = 1 << 20
#: How often the managers are texted again about a failed log until it is acknowledged.
FAILURE_REPEAT = timedelta(hours=1)


class LogFailedError(RuntimeError):
    """The stored log is not consistent with its signed checkpoints: nothing is signed."""


def load_signer(path: Path) -> checkpoints.Signer:
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
        return checkpoints.Signer.parse(text)
    except spec.LogFormatError as exc:
        raise ValueError(f"PANICBUTTON_LOG_KEY_FILE: {path}: {exc}") from None


def latest_checkpoint(session: Session) -> LogCheckpoint | None:
    return session.scalars(
        select(LogCheckpoint).order_by(LogCheckpoint.size.desc(), LogCheckpoint.id.desc())
    ).first()


def stored_entries(session: Session, batch: int = 5000, *, start: int = 0, stop: int = -1) -> Any:
    """The stored entries' bytes from ``start`` (up to ``stop``, if given), in order,
    read in batches."""
    while start != stop:
        query = select(LogEntry.body).where(LogEntry.n >= start)
        if stop >= 0:
            query = query.where(LogEntry.n < stop)
        rows = session.scalars(query.order_by(LogEntry.n).limit(batch)).all()
        yield from rows
        if len(rows) < batch:
            return
        start += batch


def stored_notes(session: Session, *, upto: int | None = None) -> list[str]:
    """The checkpoints in the database, by size; those up to checkpoint id ``upto``
    (and no larger than it), if given."""
    query = select(LogCheckpoint.note).order_by(LogCheckpoint.size, LogCheckpoint.id)
    if upto is not None:
        cap = select(LogCheckpoint.size).where(LogCheckpoint.id == upto).scalar_subquery()
        query = query.where(LogCheckpoint.id <= upto, LogCheckpoint.size <= cap)
    return list(session.scalars(query).all())


def verify_stored(
    session: Session,
    key: checkpoints.VerifierKey,
    trusted: checkpoints.Checkpoint | None = None,
    kept: list[checkpoints.Checkpoint] | None = None,
) -> verdict.Report:
    """Verify the stored log as an inspector's verifier would, against the database's
    checkpoints and ``kept`` ones (the file's); raises VerificationError."""
    notes = {note: _size(note) for note in stored_notes(session)}
    notes.update({cp.note: cp.size for cp in kept or ()})
    if not notes:
        # A log never signed yet: its chain, and where it stands.
        scan = integrity.scan_entries(stored_entries(session), 0, spec.GENESIS)
        if scan.fault is not None:
            _, i, message = scan.fault
            raise verdict.VerificationError(
                message or f"entry {i}: its prev is not the entry before it", i
            )
        tree = spec.Frontier()
        for j in range(0, len(scan.leaves), 32):
            tree.append(scan.leaves[j : j + 32])
        return verdict.Report(
            size=tree.size,
            root=tree.root(),
            frontier=list(tree.hashes),
            last_leaf=scan.leaves[-32:] if tree.size else spec.GENESIS,
        )
    report, parsed = integrity.verify_full(
        stored_entries(session), sorted(notes, key=notes.__getitem__), key, trusted=trusted
    )
    meaning.check_meaning(parsed, report, full=True)
    return report


def _size(note: str) -> int:
    """A checkpoint's size, to put it in order (its signature is checked later)."""
    try:
        return checkpoints.parse_checkpoint_text(checkpoints.split_note(note)[0])[1]
    except spec.LogFormatError:
        return -1


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
    append.audit(
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
        append.audit(
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
        signer: checkpoints.Signer,
        checkpoint_file: Path | None,
        clock: Any,
        retention: Retention,
        heartbeat: timedelta = HEARTBEAT,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        """``on_failure`` is called (on the keeper's thread) when the log fails a check,
        and again every ``FAILURE_REPEAT`` until the failure is acknowledged."""
        self._engine = engine
        self.sessions = sessions
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
        self._signing = threading.Lock()
        #: The tree proven consistent with every checkpoint known, and its last leaf.
        self._tree: spec.Frontier | None = None
        self._last_leaf = spec.GENESIS
        #: How far the checkpoint file was read.
        self._file_read = 0
        #: Why the log failed, and when; the next text to the managers is due at _remind.
        self.failure: str | None = None
        self._failed_at: datetime | None = None
        self._remind: datetime | None = None
        self._next_purge = self._next_verify = self._next_beat = None  # type: datetime | None

    @property
    def reminding(self) -> bool:
        """True while the managers are texted about a failure nobody acknowledged yet."""
        return self._remind is not None

    # -- life ---------------------------------------------------------------------------
    def start(self) -> None:
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
        if self._read_file(whole=True):
            self._next_verify = now
        self._remove = append.on_append(self._engine, self.poke)
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
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                self._tick()
            except Exception:
                log.exception("log keeper pass failed; retrying in a second")

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
            self._duty("failure reminder", lambda: self._remind_managers(now))
        if self._next_purge and now >= self._next_purge:
            self._next_purge = now + PURGE
            self._duty("retention", lambda: self.purge(now))

    def _sign_quietly(self) -> None:
        with contextlib_suppress(LogFailedError):  # recorded and told where it was found
            self.sign()

    @staticmethod
    def _duty(name: str, work: Any) -> None:
        try:
            work()
        except Exception:
            log.exception("log keeper: the %s failed; the other duties go on", name)

    def purge(self, now: datetime) -> int:
        with self.sessions.begin() as s:
            gone = personal.purge_expired(s, now=now, retention=self._retention)
        if gone:
            log.info("purged %d personal data row(s) past retention", gone)
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
            if self._tree is None:
                with self.sessions() as s:
                    self._establish(s, self._read_file(whole=True))
            # The file before the database: a checkpoint another process wrote there
            # covers entries already committed, so the head read next holds them.
            kept = self._read_file(whole=False)
            with self.sessions.begin() as s:
                size, root = self._extend(s, kept)
                if size <= self._signed:
                    return None
                cp = self.signer.sign_checkpoint(size, root)
                s.add(LogCheckpoint(size=cp.size, at=now, note=cp.note))
        except verdict.VerificationError as exc:
            self._fail(str(exc))
        self._signed = cp.size
        self._append_file(cp)
        return cp

    # -- proving the log before signing -------------------------------------------------
    def _establish(self, s: Session, kept: list[checkpoints.Checkpoint]) -> verdict.Report:
        """Check the whole stored log against every checkpoint known (what the verifier
        does); from then on, only what is appended needs checking."""
        report = verify_stored(s, self.signer.verifier, kept=kept)
        self._tree = spec.Frontier(report.size, report.frontier)
        self._last_leaf = report.last_leaf
        return report

    def _extend(self, s: Session, kept: list[checkpoints.Checkpoint]) -> tuple[int, bytes]:
        """The stored head (size, root), once proven by an RFC 9162 consistency proof to
        extend the tree checked so far, over the entries appended since; raises
        VerificationError if it does not."""
        assert self._tree is not None
        tree = self._tree
        known = self._known(s, kept)  # before the head: see _sign
        try:
            head = append.frontier(s.connection())
        except spec.LogFormatError as exc:
            raise verdict.VerificationError(f"the stored log head is damaged: {exc}") from None
        if head.size < tree.size:
            raise verdict.VerificationError(
                f"the log head says {head.size} entries, but {tree.size} were checked "
                "already: entries were removed (or an older backup restored)"
            )
        want = self._unchecked(known, tree, head.size)
        new: list[bytes] = []
        last = self._last_leaf
        grown = spec.Frontier(tree.size, tree.hashes)
        for raw in stored_entries(s, start=tree.size, stop=head.size):
            n = tree.size + len(new)
            try:
                entry = spec.parse_entry(raw)
            except spec.LogFormatError as exc:
                raise verdict.VerificationError(f"entry {n}: {exc}", n) from None
            if entry.n != n or entry.prev != last:
                raise verdict.VerificationError(
                    f"entry {n}: it is not the entry appended after the log checked "
                    f"(entries before {n} were rewritten, or it was)",
                    n,
                )
            last = spec.leaf_hash(raw)
            new.append(last)
            grown.append(last)
            if want.get(grown.size, set()) - {grown.root()}:
                raise verdict.VerificationError(
                    f"the signed checkpoint of size {grown.size} is not the log checked: "
                    "the log was rewritten (or forked)"
                )
        if len(new) != head.size - tree.size:
            raise verdict.VerificationError(
                f"the log head says {head.size} entries, but only {tree.size + len(new)} are stored"
            )
        try:
            if tree.size:
                proof = merkle.consistency_proof_from(tree.size, tree.hashes, new)
                merkle.verify_consistency(tree.size, head.size, tree.root(), head.root(), proof)
            elif head.root() != grown.root():
                raise merkle.ProofError("the head's root is not the entries' root")
        except merkle.ProofError as exc:
            raise verdict.VerificationError(
                f"the stored log head ({head.size} entries) is not consistent with the log "
                f"checked up to {tree.size} entries ({exc}): the log was rewritten"
            ) from None
        self._tree, self._last_leaf = grown, last
        return head.size, head.root()

    def _known(
        self, s: Session, kept: list[checkpoints.Checkpoint]
    ) -> list[checkpoints.Checkpoint]:
        """The file's new checkpoints and the database's latest."""
        latest = latest_checkpoint(s)
        if latest is None:
            return kept
        try:
            return [*kept, checkpoints.open_checkpoint(latest.note, self.signer.verifier)]
        except spec.LogFormatError as exc:
            raise verdict.VerificationError(f"the database's latest checkpoint: {exc}") from None

    @staticmethod
    def _unchecked(
        known: list[checkpoints.Checkpoint], tree: spec.Frontier, head: int
    ) -> dict[int, set[bytes]]:
        """The roots of the checkpoints newer than ``tree``, by size; one of ``tree``'s
        own size must have its root. (An older one not seen before is left to the next
        whole check.)"""
        for cp in known:
            if cp.size > head:
                raise verdict.VerificationError(
                    f"a signed checkpoint covers {cp.size} entries but the log head says "
                    f"{head}: entries were cut off (or an older backup restored)"
                )
            if cp.size == tree.size and cp.root != tree.root():
                raise verdict.VerificationError(
                    f"the signed checkpoint of size {cp.size} is not the log checked: "
                    "the log was rewritten (or forked)"
                )
        want: dict[int, set[bytes]] = {}
        for cp in known:
            if cp.size > tree.size:
                want.setdefault(cp.size, set()).add(cp.root)
        return want

    def _fail(self, reason: str) -> NoReturn:
        """Record the failure once, tell the managers, and raise LogFailedError."""
        now = self._clock()
        self.failure, self._failed_at, self._tree = reason, now, None
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
        self._remind = now
        self._remind_managers(now)
        raise LogFailedError(reason)

    def _remind_managers(self, now: datetime) -> None:
        """Text the managers about the failure, again every FAILURE_REPEAT, until someone
        acknowledges it."""
        if self._remind is None or now < self._remind or self._failed_at is None:
            return
        with self.sessions() as s:
            acked = s.scalar(
                select(func.max(LogEntry.at)).where(LogEntry.type == "log.failure_acknowledged")
            )
        if acked is not None and acked >= self._failed_at:
            self._remind = None
            return
        self._remind = now + FAILURE_REPEAT
        if self._on_failure is not None:
            try:
                self._on_failure()
            except Exception:
                # NOTE: telling must not undo the refusal to sign; the next reminder retries.
                log.exception("log keeper: could not tell the managers the log failed")

    def _read_file(self, *, whole: bool) -> list[checkpoints.Checkpoint]:
        """Valid checkpoints of the file: its last KEPT_TAIL bytes (``whole``), or the
        lines appended since it was last read."""
        if self._file is None:
            return []
        try:
            with self._file.open("rb") as f:
                end = f.seek(0, os.SEEK_END)
                if end < self._file_read:
                    raise verdict.VerificationError(
                        f"the checkpoint file {self._file} is shorter than when it was read: "
                        "it was cut or replaced"
                    )
                start = max(0, end - KEPT_TAIL) if whole else self._file_read
                f.seek(start)
                data = f.read(end - start)
        except FileNotFoundError:
            if self._file_read:
                message = f"the checkpoint file {self._file} is gone"
                raise verdict.VerificationError(message) from None
            return []
        except OSError as exc:
            log.error("cannot read %s (%s): the log is not compared with it", self._file, exc)
            return []
        whole_lines = data[: data.rfind(b"\n") + 1]
        self._file_read = start + len(whole_lines)
        lines = whole_lines.splitlines()[1 if whole and start else 0 :]  # the first may be cut
        kept: list[checkpoints.Checkpoint] = []
        bad = 0
        for line in filter(None, lines):
            try:
                kept.append(checkpoints.open_checkpoint(json.loads(line), self.signer.verifier))
            except (ValueError, TypeError, spec.LogFormatError):
                bad += 1
        if bad:
            log.error(
                "%s: %d line(s) are not checkpoints signed by this log's key", self._file, bad
            )
        return kept

    def _append_file(self, cp: checkpoints.Checkpoint) -> None:
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

    def self_verify(self, now: datetime) -> verdict.Report | None:
        """Verify the whole stored log against every checkpoint known (the database's and
        the file's) and record the result as a ``log.verified`` entry; None if it failed
        (recorded, the managers told, nothing signed from then on)."""
        with self._signing:
            if self.failure is not None:
                return None
            try:
                with self.sessions() as s:
                    report = self._establish(s, self._read_file(whole=True))
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


def acknowledge_failure(
    session: Session, *, by: str, reason: str, now: datetime, retention: Retention
) -> None:
    """Record that ``by`` knows the log failed its check (``reason`` kept as personal
    data): the keeper stops texting the managers about it. Signing stays stopped.
    LookupError if no failed check is left unacknowledged."""
    checks = session.execute(
        select(LogEntry.at, LogEntry.body)
        .where(LogEntry.type == "log.verified")
        .order_by(LogEntry.n.desc())
    )
    failed = next((at for at, b in checks if json.loads(b)["data"]["result"] == "failed"), None)
    acked = session.scalar(
        select(func.max(LogEntry.at)).where(LogEntry.type == "log.failure_acknowledged")
    )
    if failed is None or (acked is not None and acked >= failed):
        raise LookupError("no failed check of the log to acknowledge")
    ref, commitment = personal.keep(
        session,
        kind="review",
        value={"reason": reason},
        subjects=[by],
        now=now,
        retention=retention,
    )
    append.audit(
        session, at=now, type="log.failure_acknowledged", by=by, ref=ref, commitment=commitment
    )
