"""Texts to a worker's phone whose alarm came by the fallback SMS or call (its data
connection failed, so the page cannot read where its alarm stands): the alarm is
received, who is coming, a code not recognised.

They go to the phone's enrolled number like any plain text, in the worker's
language; the log's ``message.sent`` names the phone (``-phone-<id>``), never the
worker. Nothing is ever texted about a duress alarm.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from server.mobile.tables import MobilePhone
from server.models import Incident, IncidentKind
from server.paging import worker
from server.paging.pager import Pager
from server.people.tables import Person
from server.site import LANGUAGES, PHONE_PREFIX, Language, Staff


@dataclass(frozen=True, slots=True)
class WorkerPhone:
    """A worker's enrolled phone as the fallbacks see it: where texts go, in which
    language, and the hash its fallback code is checked against."""

    phone_id: str
    number: str
    language: Language
    fallback_sha256: str

    @classmethod
    def of(cls, phone: MobilePhone, language: str) -> WorkerPhone:
        lang: Language = next((x for x in LANGUAGES if x == language), "en")
        return cls(phone.id, phone.number, lang, phone.fallback_sha256)


class WorkerNews:
    """Texts to workers' phones, sent through the pager after the caller's commit."""

    def __init__(self, *, sessions: sessionmaker[Session], pager: Pager) -> None:
        self._sessions = sessions
        self._pager = pager

    def tell(self, phone: WorkerPhone, text: str, *, incident_id: int | None, purpose: str) -> None:
        """Send ``text`` to ``phone`` in the background."""
        reader = Staff(
            id=PHONE_PREFIX + phone.phone_id,
            name=phone.phone_id,
            phone=phone.number,
            language=phone.language,
        )
        self._pager.send_text(reader, text, incident_id=incident_id, purpose=purpose)

    def going(self, incident: Incident, name: str) -> None:
        """``name`` acknowledged ``incident``: if it is the alarm a worker's phone last
        raised or pressed by SMS or call (:attr:`MobilePhone.fallback_alert`), text the
        phone who is coming. Never for a duress alarm or a missed check-out: the phone
        may not be in the worker's hands, and nothing may show it a duress alarm."""
        if incident.kind != IncidentKind.PANIC or not incident.room_id.startswith(PHONE_PREFIX):
            return
        with self._sessions() as s:
            row = s.execute(
                select(MobilePhone, Person.language)
                .join(Person, Person.id == MobilePhone.person_id)
                .where(
                    MobilePhone.id == incident.room_id.removeprefix(PHONE_PREFIX),
                    MobilePhone.revoked_at.is_(None),
                    MobilePhone.fallback_alert == incident.alert_id,
                )
            ).first()
        if row is None:
            return
        phone = WorkerPhone.of(row[0], row[1])
        text = worker.going(phone.language, name=name)
        self.tell(phone, text, incident_id=incident.id, purpose="fallback_going")
