"""Pages claimed but not recorded: did the provider get them?

A worker claims a page ("sending") before it sends it and records the outcome
after. A crash, or a failed write, in between leaves the page "sending": the
provider may or may not have it. Before such a page is sent again it is looked
up at the provider, so a page is neither lost nor (where the provider can tell)
sent twice.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.clock import Clock
from server.errors import NotifierError
from server.log.append import audit
from server.models import Page, PageStatus
from server.paging.notifier import Notifier
from server.paging.render import Renderer

__all__ = ["Recovery"]

log = logging.getLogger(__name__)


class Recovery:
    """Looks up claimed, unrecorded pages at the provider and records what it finds."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        notifier: Notifier,
        renderer: Renderer,
        clock: Clock,
    ) -> None:
        self._sessions = sessions
        self._notifier = notifier
        self._renderer = renderer
        self._clock = clock

    def left_over(self, instance: str) -> tuple[list[Page], list[int]]:
        """What an earlier run of ``instance`` left: pages half-sent ("sending": claimed
        by it, by nobody named, or on a lapsed claim), and ids still queued. Pages another
        live instance holds are its own."""
        now = self._clock.now()
        with self._sessions.begin() as s:
            half_sent = list(
                s.scalars(
                    select(Page).where(
                        Page.status == PageStatus.SENDING,
                        or_(
                            Page.claimed_by.is_(None),
                            Page.claimed_by == instance,
                            Page.lease_until < now,
                        ),
                    )
                )
            )
            queued = list(s.scalars(select(Page.id).where(Page.status == PageStatus.PENDING)))
        return half_sent, queued

    def stuck(self, older_than: float, instance: str) -> list[Page]:
        """Pages "sending" made more than ``older_than`` seconds ago and claimed by
        ``instance`` (or by nobody named): another live instance's are its own."""
        cutoff = self._clock.now() - timedelta(seconds=older_than)
        with self._sessions() as s:
            return list(
                s.scalars(
                    select(Page).where(
                        Page.status == PageStatus.SENDING,
                        Page.created_at < cutoff,
                        or_(Page.claimed_by.is_(None), Page.claimed_by == instance),
                    )
                )
            )

    def still_sending(self, page_ids: list[int]) -> list[Page]:
        """Those of ``page_ids`` still "sending"."""
        with self._sessions() as s:
            return [
                p
                for p in (s.get(Page, i) for i in page_ids)
                if p and p.status == PageStatus.SENDING
            ]

    def went_out(self, page: Page) -> bool:
        """A page claimed and not recorded: did the provider get it? If so it is recorded
        sent; if not it is queued again ("pending"), to be sent."""
        rendered = self._renderer.render([page.id])
        found = None
        since = page.created_at - timedelta(seconds=5)
        try:
            if page.channel == "sms":
                found = self._notifier.find_sms(rendered.member.phone, rendered.body, since)
            elif not self._other_call_unrecorded(page):
                # Calls carry nothing of ours: a call to that number placed since the
                # page was made, and not recorded for another page, is this page's.
                # With another of this person's calls also unrecorded, a call found
                # could be that one's: the page is placed again (a second call is
                # better than a page marked sent that never rang).
                found = self._notifier.find_call(
                    rendered.member.phone, since, exclude=self._recorded_calls(page)
                )
        except NotifierError as exc:
            log.warning("could not ask the provider about page %d: %s", page.id, exc)
        with self._sessions.begin() as s:
            row = s.get_one(Page, page.id, with_for_update=True)
            if row.status != PageStatus.SENDING or row.claimed_by != page.claimed_by:
                # Another path (a restart's redrive, a take-over, a sweep) settled or took
                # it while the provider was asked: it is theirs, not to be sent again here.
                return True
            if found is not None:
                row.status, row.provider_sid, row.sent_at = (
                    PageStatus.SENT,
                    found,
                    self._clock.now(),
                )
                audit(
                    s,
                    at=self._clock.now(),
                    type="page.sent",
                    incident_id=row.incident_id,
                    page=row.id,
                    provider_id=found,
                    recovered=True,
                )
                return True
            # Not found: sending again is better than a page that never arrives.
            row.status = PageStatus.PENDING
        return False

    def _other_call_unrecorded(self, page: Page) -> bool:
        """Another call page to this person claimed but not recorded ("sending")."""
        with self._sessions() as s:
            other = s.scalar(
                select(Page.id).where(
                    Page.staff_id == page.staff_id,
                    Page.channel == "call",
                    Page.id != page.id,
                    Page.status == PageStatus.SENDING,
                )
            )
        return other is not None

    def _recorded_calls(self, page: Page) -> frozenset[str]:
        """Call ids already recorded for this person's other pages since this one."""
        with self._sessions() as s:
            return frozenset(
                sid
                for sid in s.scalars(
                    select(Page.provider_sid).where(
                        Page.staff_id == page.staff_id,
                        Page.channel == "call",
                        Page.id != page.id,
                        Page.provider_sid.is_not(None),
                        Page.created_at >= page.created_at - timedelta(hours=1),
                    )
                )
                if sid
            )
