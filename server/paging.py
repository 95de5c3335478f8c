"""Paging: sends the queued pages of an incident, at once and concurrently.

Pages are rows written in the same transaction as the incident, so a page
survives a crash between commit and send: :meth:`Pager.redrive` sends what is
still queued at start. A worker claims a page with a conditional UPDATE before
sending, so two workers (or two server instances) never send the same page.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.wire import now_utc
from server import messages
from server.errors import NotifierError
from server.incidents import audit
from server.models import Incident, Page
from server.notifier import Notifier
from server.site import Site, Staff

log = logging.getLogger(__name__)

#: Tries per page for errors that may pass (provider 5xx, 429, timeouts), and the pause between.
RETRIES = 3
RETRY_PAUSE = 1.0


class Pager:
    """Sends pages and plain texts on a pool of worker threads."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        site: Site,
        notifier: Notifier,
        workers: int = 8,
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        self._sessions = sessions
        self._site = site
        self._notifier = notifier
        self._clock = clock
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pager")
        self._inflight: set[Future[None]] = set()
        #: Called on a worker thread with the incident id after each page is sent or failed.
        self.on_page_done: Callable[[int], None] = lambda incident_id: None

    def backlog(self) -> int:
        """Sends queued or under way in this process."""
        return sum(1 for f in self._inflight if not f.done())

    def dispatch(self, page_ids: list[int]) -> None:
        for page_id in page_ids:
            self._submit(self._send_page, page_id)

    def _submit(self, fn: Callable[..., None], *args: object) -> None:
        future = self._pool.submit(fn, *args)
        self._inflight.add(future)
        future.add_done_callback(self._inflight.discard)

    def redrive(self) -> int:
        """Send every page left queued or half-sent by an earlier run; return how many."""
        with self._sessions.begin() as s:
            # A page "sending" when the process died may or may not have gone out;
            # sending it again is better than a page that never arrives.
            s.execute(update(Page).where(Page.status == "sending").values(status="pending"))
            ids = list(s.scalars(select(Page.id).where(Page.status == "pending").order_by(Page.id)))
        if ids:
            log.warning("re-sending %d page(s) queued before a restart", len(ids))
        self.dispatch(ids)
        return len(ids)

    def _send_page(self, page_id: int) -> None:
        with self._sessions.begin() as s:
            claimed = s.execute(
                update(Page)
                .where(Page.id == page_id, Page.status == "pending")
                .values(status="sending")
            ).rowcount  # type: ignore[attr-defined]
            if not claimed:
                return
            page = s.get_one(Page, page_id)
            incident = s.get_one(Incident, page.incident_id)
            member = self._site.member(page.staff_id)
            room = self._site.room(incident.room_id)
            body = messages.page(
                member.language,
                room=room.label,
                at=incident.received_at,
                timezone=self._site.timezone,
                code=page.reply_code,
                test=incident.kind == "test",
            )
        sid, error = self._deliver(member, body)
        with self._sessions.begin() as s:
            page = s.get_one(Page, page_id)
            now = self._clock()
            if sid is not None:
                page.status, page.provider_sid, page.sent_at = "sent", sid, now
                audit(
                    s,
                    at=now,
                    type="page.sent",
                    incident_id=page.incident_id,
                    page=page.id,
                    provider_id=sid,
                )
            else:
                page.status, page.error = "failed", (error.args[0] if error else "")[:200]
                audit(
                    s,
                    at=now,
                    type="page.failed",
                    incident_id=page.incident_id,
                    page=page.id,
                    code=error.code if error else None,
                )
            incident_id = page.incident_id
        self.on_page_done(incident_id)

    def _deliver(self, member: Staff, body: str) -> tuple[str | None, NotifierError | None]:
        error: NotifierError | None = None
        for attempt in range(RETRIES):
            try:
                return self._notifier.send_sms(member.phone, body), None
            except NotifierError as exc:
                error = exc
                log.warning("SMS to staff %s failed (try %d): %s", member.id, attempt + 1, exc)
                if not exc.retryable:
                    break
                time.sleep(RETRY_PAUSE * (attempt + 1))
        return None, error

    def send_text(self, member: Staff, body: str, *, incident_id: int | None, purpose: str) -> None:
        """Send a plain text (confirmation, stand-down) in the background and log it."""
        self._submit(self._send_text, member, body, incident_id, purpose)

    def _send_text(self, member: Staff, body: str, incident_id: int | None, purpose: str) -> None:
        sid, error = self._deliver(member, body)
        with self._sessions.begin() as s:
            audit(
                s,
                at=self._clock(),
                type="message.sent" if sid else "message.failed",
                incident_id=incident_id,
                staff=member.id,
                purpose=purpose,
                code=error.code if error else None,
            )

    def close(self) -> None:
        self._pool.shutdown(wait=True)
