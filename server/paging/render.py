"""What a page says: the SMS or the call for one or more page rows, within budget.

Pages to one person on one channel are rendered together (a bundle). The
same page always renders the same text (its links count from its creation),
so a page left half-sent by a crash can be looked up at the provider by its text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from server.escalation import plans
from server.models import ALARM_KINDS, Incident, Page
from server.paging import messages
from server.paging.fit import (
    BUDGET,
    BUNDLE_TEXTS,
    CALL_ROOMS,
    COMPACT_BUDGET,
    COMPACT_ROOM_CHARS,
    split,
)
from server.site import LiveSite, Site, SiteSource, Staff

__all__ = ["Rendered", "Renderer"]


@dataclass(frozen=True, slots=True)
class Rendered:
    """A page ready to send: where, what, and which page rows it stands for."""

    member: Staff
    channel: str
    page_ids: list[int]
    incident_ids: list[int]
    body: str  # SMS text, or TwiML for a call
    step: int
    #: Further SMS after ``body``: the rooms of a bundle that did not fit, when there is
    #: no full-list link to send instead.
    more: tuple[str, ...] = ()
    #: (incident id, when its round opened) of each alarm whose first step this pages:
    #: what the time to a first page is counted from (:mod:`server.metrics`).
    opened: tuple[tuple[int, datetime], ...] = ()

    @classmethod
    def text(cls, member: Staff, body: str) -> Rendered:
        """A plain SMS that stands for no page row."""
        return cls(member=member, channel="sms", page_ids=[], incident_ids=[], body=body, step=0)


class Renderer(LiveSite):
    """Renders page rows for the site's staff and rooms.

    ``callback_url(path)`` gives the public URL for Twilio's callbacks (None without
    one); ``link_url``, ``list_url`` and ``map_url`` give a page's acknowledgement
    link, a person's full-list link and the map of a worker's phone's positions
    (None without links).
    """

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        site: SiteSource,
        callback_url: Callable[[str], str | None],
        link_url: Callable[[int, datetime], str | None],
        list_url: Callable[[int, datetime], str | None],
        map_url: Callable[[int, datetime], str | None],
    ) -> None:
        self._sessions = sessions
        self._sites = site
        self._callback_url = callback_url
        self._link_url = link_url
        self._list_url = list_url
        self._map_url = map_url

    def render(self, page_ids: list[int], *, compact: bool = False) -> Rendered:
        """The SMS or call for these pages (one person, one channel), within budget.
        Raises LookupError when the person or a room was removed from the site file."""
        with self._sessions() as s:
            pages = [s.get_one(Page, i) for i in page_ids]
            incidents = [s.get_one(Incident, p.incident_id) for p in pages]
        first = pages[0]
        site = self._site  # read once: one configuration for the whole message
        member = site.member(first.staff_id)
        limit = COMPACT_ROOM_CHARS if compact else messages.ROOM_CHARS
        rooms = [messages.room_label(site.room(i.room_id).label, limit) for i in incidents]
        room_ids = [i.room_id for i in incidents]  # what "+N more rooms" counts
        budget = (COMPACT_BUDGET if compact else BUDGET)[first.channel]
        more_texts: tuple[str, ...] = ()
        if first.channel == "call":
            most = 1 if compact else CALL_ROOMS
            body = self._call(
                pages, incidents, rooms=rooms, member=member, budget=budget, most=most
            )
        else:
            lines = [
                self._sms(page, incident, room, member, site, link=len(pages) == 1, compact=compact)
                for page, incident, room in zip(pages, incidents, rooms, strict=True)
            ]
            # The list names the alarms of this bundle and older ones, never an alarm
            # opened after it was sent: the token carries the bundle's newest page.
            newest = max(p.id for p in pages)
            link = self._list_url(newest, first.created_at) if len(pages) > 1 else None
            texts = split(
                lines,
                room_ids,
                budget,
                lambda more: messages.bundle_footer(member.language, more=more, link=link),
                most=1 if link else BUNDLE_TEXTS,
            )
            body, more_texts = texts[0], tuple(texts[1:])
        return Rendered(
            member=member,
            channel=first.channel,
            page_ids=page_ids,
            incident_ids=[i.id for i in incidents],
            body=body,
            step=first.step,
            more=more_texts,
            opened=tuple(
                (i.id, plans.opened_at(i))
                for p, i in zip(pages, incidents, strict=True)
                if p.step == plans.base(i) and i.kind in ALARM_KINDS
            ),
        )

    def _call(
        self,
        pages: list[Page],
        incidents: list[Incident],
        *,
        rooms: list[str],
        member: Staff,
        budget: int,
        most: int,
    ) -> str:
        """TwiML naming as many rooms as fit (at most ``most``), counting the others; key 1
        acknowledges the rooms it named. The compact form (``most`` 1) says it once. A
        duress alarm or a missed check-out is said as such after its room."""
        lang = member.language
        room_ids = [i.room_id for i in incidents]  # what "+N more rooms" counts
        rooms = [
            messages.room_spoken(lang, room, kind=i.kind)
            for room, i in zip(rooms, incidents, strict=True)
        ]
        for named in range(min(most, len(pages)), 0, -1):
            ids = ",".join(str(p.id) for p in pages[:named])
            gather = self._callback_url(f"/twilio/voice?pages={ids}") or ""
            more = len(set(room_ids[named:]) - set(room_ids[:named]))
            twiml = messages.call_twiml(
                lang,
                room=messages.rooms_spoken(lang, rooms[:named], more=more),
                gather_url=gather,
                follow=pages[0].step < 0,
                twice=most > 1,
                phone=all(messages.of_phone(r) for r in room_ids[:named]),
            )
            if messages.units(twiml) <= budget:
                return twiml
        # Unreachable with the budgets above (one room is at most ROOM_CHARS long).
        raise LookupError(f"a call for page {pages[0].id} cannot fit {budget} characters")

    def _sms(
        self,
        page: Page,
        incident: Incident,
        room: str,
        member: Staff,
        site: Site,
        *,
        link: bool,
        compact: bool = False,
    ) -> str:
        lang, tz = member.language, site.timezone
        if incident.kind == "duty_gap":
            return messages.duty_gap(
                lang, since=incident.pressed_at, timezone=tz, code=page.reply_code
            )
        if incident.kind == "unit_offline":
            return messages.unit_offline(
                lang, room=room, since=incident.pressed_at, timezone=tz, code=page.reply_code
            )
        phone = messages.of_phone(incident.room_id)
        # Every page of a worker's phone's alarm links to where the phone is.
        map_link = self._map_url(page.id, page.created_at) if phone else None
        if page.step < 0:
            text = messages.follow_up(
                lang,
                room=room,
                name=site.name_of(incident.acknowledged_by or member.id),
                at=incident.acknowledged_at or incident.received_at,
                timezone=tz,
                code=page.reply_code,
                phone=phone,
            )
            return messages.with_links(lang, text, ack=None, map_link=map_link)
        opened = (incident.plan or {}).get("opened")  # a reopened incident's new start
        at = datetime.fromisoformat(opened) if opened else incident.received_at
        alarm = incident.kind in ALARM_KINDS
        if compact and alarm:
            text = messages.page_compact(
                lang, kind=incident.kind, room=room, at=at, timezone=tz, code=page.reply_code
            )
            return messages.with_links(lang, text, ack=None, map_link=map_link)
        text = messages.page(
            lang, kind=incident.kind, room=room, at=at, timezone=tz, code=page.reply_code
        )
        ack = self._link_url(page.id, page.created_at) if link and alarm else None
        return messages.with_links(lang, text, ack=ack, map_link=map_link)
