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
        # Someone called who can no longer be paged (closed, demoted, a changed phone
        # since) is still heard: their key 1 takes the alarm.
        staff_id = pages[0].staff_id
        member = self._site.known(staff_id)
        lang = member.language if member else "en"
        if digits.strip() != "1":
            return messages.call_answer(lang, messages.call_nothing(lang))
        mine, others = [], []
        phones = True  # every alarm taken is a worker's phone: "going to help" them
        for page in pages:
            incident = self._responder.acknowledge(
                incident_id=page.incident_id, staff_id=staff_id, via="call", confirm=False
            )
            if incident is None:
                continue
            room = messages.room_label(self._site.room(incident.room_id).label)
            if incident.acknowledged_by in (None, staff_id):
                mine.append(room)
                phones = phones and messages.of_phone(incident.room_id)
            else:  # someone else was first: say so, never "you are going"
                taker = self._site.name_of(incident.acknowledged_by)
                others.append(messages.already(lang, name=taker, room=room))
        said = [messages.call_thanks(lang, room=", ".join(mine), phone=phones)] if mine else []
        return messages.call_answer(lang, " ".join(said + others) or messages.call_nothing(lang))
