"""A failed check of the log: the managers are texted about it, again every
``FAILURE_REPEAT``, until someone acknowledges it (``panicbutton audit
acknowledge-failure``, a ``log.failure_acknowledged`` entry). Signing stays stopped."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from server.log import personal
from server.log.personal import Retention
from server.models import LogEntry

log = logging.getLogger(__name__)

#: How often the managers are texted again about a failed log until it is acknowledged.
FAILURE_REPEAT = timedelta(hours=1)


def _acknowledged(session: Session) -> datetime | None:
    """When a failure was last acknowledged, if ever."""
    return session.scalar(
        select(func.max(LogEntry.at)).where(LogEntry.type == "log.failure_acknowledged")
    )


class Reminder:
    """Texts the managers (``tell``) about a failure until it is acknowledged."""

    def __init__(self, sessions: sessionmaker[Session], tell: Callable[[], None] | None) -> None:
        self._sessions = sessions
        self._tell = tell
        self._failed_at: datetime | None = None
        #: When the next text is due; None when none is (no failure, or acknowledged).
        self._next: datetime | None = None
        # NOTE: the keeper's thread and the one that found the failure (an export's) may
        # both find a text due: one of them sends it.
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        """True while the managers are texted about a failure nobody acknowledged yet."""
        return self._next is not None

    def failed(self, now: datetime) -> None:
        """The log failed its check at ``now``: tell the managers at once."""
        with self._lock:
            self._failed_at = self._next = now
        self.remind(now)

    def remind(self, now: datetime) -> None:
        """Tell the managers if a text is due and the failure is not acknowledged yet."""
        with self._lock:
            if self._next is None or now < self._next or self._failed_at is None:
                return
            with self._sessions() as s:
                acked = _acknowledged(s)
            if acked is not None and acked >= self._failed_at:
                self._next = None
                return
            self._next = now + FAILURE_REPEAT
        if self._tell is not None:
            try:
                self._tell()
            except Exception:
                # NOTE: telling must not undo the refusal to sign; the next reminder retries.
                log.exception("log keeper: could not tell the managers the log failed")


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
    acked = _acknowledged(session)
    if failed is None or (acked is not None and acked >= failed):
        raise LookupError("no failed check of the log to acknowledge")
    personal.record(
        session,
        type="log.failure_acknowledged",
        kind="review",
        value={"reason": reason},
        subjects=[by],
        now=now,
        retention=retention,
        by=by,
    )
