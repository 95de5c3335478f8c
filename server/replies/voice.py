"""A key pressed in a page call: "1" acknowledges every alarm the call named."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from server.models import Page
from server.paging import messages
from server.response import Responder
from server.site import LiveSite, SiteSource


class VoiceKeys(LiveSite):
    """Answers a key pressed in a call with TwiML."""

    def __init__(
        self, *, sessions: sessionmaker[Session], site: SiteSource, responder: Responder
    ) -> None:
        self._sessions = sessions
        self._sites = site
        self._responder = responder

    def handle(self, *, page_ids: list[int], digits: str) -> str:
        """A key pressed in a page call; answers with TwiML. Only "1" acknowledges."""
        with self._sessions() as s:
            pages = [p for p in (s.get(Page, i) for i in page_ids) if p is not None]
        if not pages:
            return messages.call_answer("en", "")
        member = self._site.member(pages[0].staff_id)
        if digits.strip() != "1":
            return messages.call_answer(member.language, messages.call_nothing(member.language))
        mine, others = [], []
        for page in pages:
            incident = self._responder.acknowledge(
                incident_id=page.incident_id, staff_id=member.id, via="call", confirm=False
            )
            if incident is None:
                continue
            room = messages.room_label(self._site.room(incident.room_id).label)
            if incident.acknowledged_by in (None, member.id):
                mine.append(room)
            else:  # someone else was first: say so, never "you are going"
                taker = self._site.member(incident.acknowledged_by)
                others.append(messages.already(member.language, name=taker.name, room=room))
        said = [messages.call_thanks(member.language, room=", ".join(mine))] if mine else []
        return messages.call_answer(
            member.language, " ".join(said + others) or messages.call_nothing(member.language)
        )
