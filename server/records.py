"""Records: reading incidents, adding notes and review sign-offs, exporting the log.

Reading a record is itself recorded: every view and export first appends a
``record.viewed`` or ``record.exported`` entry naming who looked; why they
looked is kept as personal data (``access`` retention), never in the log itself.
The HTTP routes are in ``server/routes/records.py``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.clock import Clock
from panicbutton.log import checkpoints
from panicbutton.wire import INT_MAX
from server.errors import ServerError
from server.log import export, personal
from server.log.keeper import LogKeeper
from server.log.personal import Retention
from server.log.stored import latest_checkpoint
from server.models import Incident, LogEntry, State

#: A board polled every few seconds, or an incident's page reloaded, is recorded once per
#: this many seconds per viewer, record and reason.
LIST_VIEW_EVERY = 900.0
#: The views of one incident's record its timeline reads at most (the newest).
VIEWS_READ = 1000
#: One export at a time: each reads the whole log in this (the alarm server's) process.
_EXPORTING = threading.Lock()


class BusyError(ServerError, RuntimeError):
    """Another export is being made; try again in a minute."""


class NoRecordError(ServerError, LookupError):
    """No such incident, or nothing to export for a scope (answered 404)."""


@dataclass(frozen=True)
class Access:
    """Who is reading a record (a pseudonymous id) and why (personal data)."""

    by: str
    justification: str


class Records:
    """The records of incidents and the log, each reading of them recorded."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        keeper: LogKeeper,
        clock: Clock,
        retention: Retention,
    ) -> None:
        self._sessions = sessions
        self._keeper = keeper
        self._clock = clock
        self._retention = retention
        #: When each (viewer, scope, hash of reason) last had a view recorded (monotonic).
        self._views: dict[tuple[str, str, str], float] = {}
        self._views_lock = threading.Lock()

    def _record_access(self, who: Access, *, type_: str, scope: str) -> None:
        now = self._clock.now()
        with self._sessions.begin() as s:
            personal.record(
                s,
                type=type_,
                kind="access",
                value={"justification": who.justification},
                subjects=[who.by],
                now=now,
                retention=self._retention,
                by=who.by,
                scope=scope,
            )

    def _record_view(self, who: Access, *, scope: str) -> None:
        """Record a view of ``scope``, at most once per LIST_VIEW_EVERY per viewer and
        reason, so that a live board that polls, or a page reloaded, does not flood the
        log."""
        now = self._clock.monotonic()
        # Keyed on a hash: the reason itself is personal data, kept only in the log's store.
        key = (who.by, scope, hashlib.sha256(who.justification.encode()).hexdigest())
        with self._views_lock:
            views = self._views
            for old in [k for k, at in views.items() if now - at >= LIST_VIEW_EVERY]:
                del views[old]
            due = key not in views
        if due:
            self._record_access(who, type_="record.viewed", scope=scope)
            with self._views_lock:
                self._views[key] = now  # only once it is recorded

    def incidents(
        self,
        who: Access,
        *,
        state: State | None,
        limit: int,
        room: str | None = None,
        kind: str | None = None,
        since: datetime | None = None,
        before: datetime | None = None,
        offset: int = 0,
    ) -> list[Incident]:
        """Newest first, at most ``limit`` (1 to 1000) after skipping ``offset``;
        ``state``, ``room``, ``kind`` and received in [``since``, ``before``) filter. The
        view is recorded at most once per LIST_VIEW_EVERY per viewer and reason."""
        self._record_view(who, scope="incidents")
        with self._sessions() as s:
            query = (
                select(Incident)
                .order_by(Incident.id.desc())
                .limit(min(max(limit, 1), 1000))
                .offset(max(offset, 0))
            )
            if state:
                query = query.where(Incident.state == state)
            if room:
                query = query.where(Incident.room_id == room)
            if kind:
                query = query.where(Incident.kind == kind)
            if since:
                query = query.where(Incident.received_at >= since)
            if before:
                query = query.where(Incident.received_at < before)
            return list(s.scalars(query))

    def incident(self, incident_id: int, who: Access) -> tuple[Incident, list[LogEntry]]:
        """One incident and its timeline from the log; the view is recorded first (at
        most once per LIST_VIEW_EVERY per viewer and reason). NoRecordError if there is
        no such incident."""
        with self._sessions() as s:
            if s.get(Incident, incident_id) is None:
                raise NoRecordError(f"no incident {incident_id}")
        self._record_view(who, scope=f"incident:{incident_id}")
        with self._sessions() as s:
            incident = s.get(Incident, incident_id)
            assert incident is not None  # incidents are never deleted
            events = s.scalars(
                select(LogEntry).where(LogEntry.incident_id == incident_id).order_by(LogEntry.n)
            )
            return incident, list(events)

    def viewed(self, incident_id: int, who: Access) -> None:
        """Record that ``who`` read part of one incident's record shown elsewhere (the map
        of a phone's positions), as :meth:`incident` records a view (at most once per
        LIST_VIEW_EVERY per viewer and reason)."""
        self._record_view(who, scope=f"incident:{incident_id}")

    def views(self, incident_id: int, *, limit: int = VIEWS_READ) -> list[LogEntry]:
        """The newest ``limit`` ``record.viewed`` entries of one incident's record, oldest
        first (they name its scope, not the incident: a view is no event of the incident
        itself)."""
        scope = f"incident:{incident_id}"
        # The entry's canonical bytes (compact, sorted keys) hold its scope just so: the
        # database narrows on them, the decoded data decides.
        needle = b'"scope":' + json.dumps(scope).encode()
        with self._sessions() as s:
            # SQLite's LIKE matches no BLOB; PostgreSQL has LIKE for bytea, not instr.
            holds = (
                func.instr(LogEntry.body, needle) > 0
                if s.get_bind().dialect.name == "sqlite"
                else LogEntry.body.op("LIKE")(b"%" + needle + b"%")
            )
            first = s.scalar(
                select(func.min(LogEntry.n)).where(LogEntry.incident_id == incident_id)
            )
            if first is None:
                return []
            entries = s.scalars(
                select(LogEntry)
                .where(
                    LogEntry.type == "record.viewed",
                    LogEntry.n > first,
                    holds,
                )
                .order_by(LogEntry.n.desc())
                .limit(max(limit, 1))
            )
            return [e for e in reversed(list(entries)) if e.data.get("scope") == scope]

    def add_note(self, incident_id: int, *, by: str, text: str, subjects: list[str]) -> str:
        """Add a note about ``subjects`` (its author among them) to an incident; returns
        its personal data's ref. NoRecordError if there is no such incident."""
        return self._add_personal(
            incident_id,
            type_="note.added",
            kind="note",
            value={"text": text},
            by=by,
            subjects=sorted({by, *subjects}),
        )

    def sign_off(self, incident_id: int, *, by: str, remarks: str) -> str:
        """``by`` signs off the review of an incident; returns the remarks' ref.
        NoRecordError if there is no such incident."""
        return self._add_personal(
            incident_id,
            type_="review.signed_off",
            kind="review",
            value={"remarks": remarks},
            by=by,
            subjects=[by],
        )

    def _add_personal(
        self,
        incident_id: int,
        *,
        type_: str,
        kind: str,
        value: dict[str, Any],
        by: str,
        subjects: list[str],
    ) -> str:
        now = self._clock.now()
        with self._sessions.begin() as s:
            if s.get(Incident, incident_id) is None:
                raise NoRecordError(f"no incident {incident_id}")
            return personal.record(
                s,
                type=type_,
                kind=kind,
                value=value,
                subjects=subjects,
                now=now,
                retention=self._retention,
                incident_id=incident_id,
                by=by,
            )

    def latest_checkpoint(self) -> str | None:
        """The newest signed checkpoint (a C2SP note), or None before the first."""
        with self._sessions() as s:
            newest = latest_checkpoint(s)
        return None if newest is None else newest.note

    @property
    def verifier_key(self) -> checkpoints.VerifierKey:
        """The log's verifier key, to publish and to pass to ``--key``."""
        return self._keeper.signer.verifier

    def export(self, who: Access, *, scope: str, with_personal: bool) -> dict[str, bytes]:
        """The files of a verifiable bundle for ``scope``, the export recorded first and
        then signed. ExportError for a scope that is not one; NoRecordError for nothing to
        export; BusyError while another export runs; LogFailedError if the log failed
        its check (nothing is signed then)."""
        export.check_scope(scope)
        if scope.startswith("incident:"):
            number = int(scope.partition(":")[2])
            with self._sessions() as s:
                if number > INT_MAX or s.get(Incident, number) is None:
                    raise NoRecordError(f"no {scope.replace(':', ' ')}")
        if not _EXPORTING.acquire(blocking=False):
            raise BusyError("another export is being made; try again in a minute")
        try:
            self._record_access(who, type_="record.exported", scope=scope)
            # NOTE: signed now (once the log is proven consistent with its checkpoints), so
            # the bundle's checkpoint covers the export's own record.
            try:
                return export.make_bundle(
                    self._keeper,
                    scope=scope,
                    now=self._clock.now(),
                    with_personal=with_personal,
                    for_self=scope == f"person:{who.by}",
                )
            except export.ExportError as exc:
                raise NoRecordError(str(exc)) from None
        finally:
            _EXPORTING.release()

    def report(self, who: Access, *, fmt: str) -> tuple[bytes, str]:
        """The manager's report (``csv`` or ``pdf``) of every incident, from a full
        bundle made for it (and recorded as an export), and its media type; raises as
        ``export`` does."""
        files = self.export(who, scope="full", with_personal=False)
        return export.render_report(files, fmt=fmt, now=self._clock.now())
