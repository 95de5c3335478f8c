"""Acting on an SMS from staff: a code acknowledges or closes the alarm it names,
DUTY takes over, STOP and START opt out and in; anything else is answered with
what to send, within the limits of :mod:`server.replies.codes`. An SMS from any
other number goes to :mod:`server.replies.fallback` (a worker's phone's fallback)."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.clock import Clock
from server.escalation import plans
from server.models import Incident, Outcome, Page, State
from server.paging import messages
from server.paging.pager import Pager
from server.replies.codes import (
    CODES_PAUSE,
    GUESS_WINDOW,
    MAX_SITE_WRONG_CODES,
    MAX_WRONG_CODES,
    ReplyLimits,
)
from server.replies.fallback import Fallback
from server.replies.optout import OptOut
from server.replies.words import Command, Kind, parse
from server.response import Responder
from server.rota import Rota
from server.site import LiveSite, SiteSource, Staff

log = logging.getLogger(__name__)

#: Open alarms listed in the answer to a reply without a code.
CODES_SHOWN = 5


class SmsReplies(LiveSite):
    """Staff's SMS replies; answers go out through the pager."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        site: SiteSource,
        clock: Clock,
        pager: Pager,
        responder: Responder,
        rota: Rota,
        optout: OptOut,
        limits: ReplyLimits,
        fallback: Fallback,
    ) -> None:
        self._sessions = sessions
        self._sites = site
        self._clock = clock
        self._pager = pager
        self._responder = responder
        self._rota = rota
        self._optout = optout
        self._limits = limits
        self._fallback = fallback

    def handle(self, *, phone: str, body: str, sid: str = "") -> None:
        """Act on an SMS from ``phone`` (``sid``: its provider id); replies go out through
        the pager. A staff number keeps its meaning first, unless the body holds the
        fallback code of a phone enrolled with that number; any other number is heard only
        as a worker's phone's fallback."""
        member = self._site.by_phone(phone)
        if member is None or self._fallback.holds_code(number=phone, body=body):
            # NOTE: a worker who is staff as well, on one number, sends their phone's
            # fallback code: that is an alarm, never a reply code.
            self._fallback.sms(number=phone, body=body, sid=sid)
            return
        command = parse(body)
        match command.kind:
            case Kind.OPT_OUT | Kind.OPT_IN:
                with self._sessions.begin() as s:
                    if command.kind is Kind.OPT_OUT:
                        self._optout.opted_out(s, member.id, self._clock.now())
                    else:
                        self._optout.opt_in(s, member.id, self._clock.now())
                return
            case Kind.DUTY_ON | Kind.DUTY_OFF:
                self._limits.understood(member.phone)
                self._rota.takeover(staff_id=member.id, on=command.kind is Kind.DUTY_ON)
                return
            case Kind.NO_CODE:
                self._ask_for_code(member)
                return
            case Kind.UNKNOWN:
                self._unclear(member, messages.not_understood(member.language))
                return
        self._act_on_code(member, command)

    def _act_on_code(self, member: Staff, command: Command) -> None:
        """Acknowledge or resolve the incident a reply's code names, if the code is right."""
        now = self._clock.now()
        if self._codes_refused(member, now):
            return
        incident_id = (
            self._incident_for_code(member.id, command.code) if command.code is not None else None
        )
        if incident_id is None:
            self._wrong_code(member, now)
            return
        self._limits.understood(member.phone)
        if command.kind is Kind.RESOLVE:
            self._close_by_code(member, incident_id, command)
            return
        self._responder.acknowledge(incident_id=incident_id, staff_id=member.id, via="sms")

    def _close_by_code(self, member: Staff, incident_id: int, command: Command) -> None:
        """ "482g" or "482f": closes only an alarm already taken, and only for the person
        who took it or whom a follow-up asked to close it. An open alarm is never closed
        by SMS: a guessed code must not stop the paging."""
        lang = member.language
        with self._sessions() as s:
            incident = s.get_one(Incident, incident_id)
            state, acker, room = incident.state, incident.acknowledged_by, incident.room_id
            asked = acker == member.id or s.scalar(
                select(Page.id)
                .where(Page.incident_id == incident_id, Page.staff_id == member.id, Page.step < 0)
                .limit(1)
            )
        label, phone = self._site.room(room).label, messages.of_phone(room)
        if state == State.OPEN:
            log.info("staff %s: close by SMS refused: the alarm is not taken yet", member.id)
            text = messages.take_first(lang, room=label, code=command.code or 0, phone=phone)
            self._pager.send_text(member, text, incident_id=incident_id, purpose="not_done")
            return
        if state == State.ACKNOWLEDGED and not asked:
            log.info("staff %s: close by SMS refused: taken by someone else", member.id)
            name = self._site.name_of(acker or member.id)
            text = messages.not_yours(lang, room=label, name=name, phone=phone)
            self._pager.send_text(member, text, incident_id=incident_id, purpose="not_done")
            return
        closed = self._responder.resolve(
            incident_id=incident_id,
            staff_id=member.id,
            outcome=Outcome(command.outcome or "genuine"),
        )
        if closed is not None:
            self._pager.send_text(
                member,
                messages.closed(lang, room=label, phone=phone),
                incident_id=incident_id,
                purpose="closed",
            )

    def _codes_refused(self, member: Staff, now: datetime) -> bool:
        """True while codes from this phone (or from any, see MAX_SITE_WRONG_CODES) are not
        acted on. The first code in each lock is answered with why, even past the limit on
        answers (the real person may be the one locked out); later ones are not (no loop
        with an auto-responder)."""
        tz, lang = self._site.timezone, member.language
        phone_until = self._limits.locked_until(member.phone, now)
        if phone_until is not None:
            log.warning("staff %s: reply code refused: too many wrong codes lately", member.id)
            key, until = "phone", phone_until
            text = messages.codes_locked(lang, until=phone_until, timezone=tz)
        else:
            site_until = self._limits.paused_until(now)
            if site_until is None:
                return False
            log.warning("staff %s: reply code refused: codes by SMS are paused", member.id)
            key, until = "site", site_until
            text = messages.codes_paused(lang, until=site_until, timezone=tz)
        if self._limits.first_told(member.phone, key, until):
            self._pager.send_text(member, text, incident_id=None, purpose="not_understood")
        return True

    def _incident_for_code(self, staff_id: str, code: int) -> int | None:
        """The unresolved incident whose current round paged this person with ``code``: a
        code from before a reopen (a late reply about the closed alarm) takes nothing."""
        with self._sessions() as s:
            rows = s.execute(
                select(Incident.id, Incident.round, Page.step)
                .join(Page, Page.incident_id == Incident.id)
                .where(
                    Page.staff_id == staff_id,
                    Page.reply_code == code,
                    Incident.state != State.RESOLVED,
                )
            ).all()
        return next((i for i, now, step in rows if plans.round_of(step) == now), None)

    def _open_codes(self, staff_id: str) -> list[tuple[int, str]]:
        """(code, room) of this person's unresolved incidents, newest page's code each."""
        with self._sessions() as s:
            rows = s.execute(
                select(Incident.id, Incident.room_id, Page.reply_code)
                .join(Page, Page.incident_id == Incident.id)
                .where(Page.staff_id == staff_id, Incident.state != State.RESOLVED)
                .order_by(Incident.id, Page.id)
            ).all()
        codes = {incident_id: (code, room_id) for incident_id, room_id, code in rows}
        return [(code, self._site.room(room).label) for code, room in codes.values()][:CODES_SHOWN]

    def _ask_for_code(self, member: Staff) -> None:
        """A reply without a code (or a wrong one): say which codes this person can send."""
        codes = self._open_codes(member.id)
        lang = member.language
        self._unclear(
            member,
            messages.code_needed(lang, codes=codes) if codes else messages.not_understood(lang),
        )

    def _wrong_code(self, member: Staff, now: datetime) -> None:
        count, paused = self._limits.wrong_code(member.phone, now)
        log.warning(
            "staff %s: reply code matches none of their open alarms (%d of %d allowed in %d min)",
            member.id,
            count,
            MAX_WRONG_CODES,
            GUESS_WINDOW.total_seconds() // 60,
        )
        locked = self._limits.locked_until(member.phone, now)
        lang, tz = member.language, self._site.timezone
        if paused:  # said with the guess that starts it, so the limit on answers never hides it
            log.warning(
                "%d wrong reply codes on the site within %d min: codes by SMS paused for %d min",
                MAX_SITE_WRONG_CODES,
                GUESS_WINDOW.total_seconds() // 60,
                CODES_PAUSE.total_seconds() // 60,
            )
            text = messages.codes_paused(lang, until=now + CODES_PAUSE, timezone=tz)
            self._pager.send_text(member, text, incident_id=None, purpose="not_understood")
        elif locked is None:
            self._ask_for_code(member)
        else:  # said with the guess that starts it, so the limit on answers never hides it
            self._unclear(member, messages.codes_locked(lang, until=locked, timezone=tz))

    def _unclear(self, member: Staff, text: str) -> None:
        """Answer a reply we did not act on, at most MAX_NOT_UNDERSTOOD times in a row."""
        if not self._limits.not_understood(member.phone):
            log.warning("staff %s: reply not understood again; staying silent", member.id)
            return
        self._pager.send_text(member, text, incident_id=None, purpose="not_understood")
