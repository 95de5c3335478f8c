"""Opting out of SMS (STOP, or Twilio's error 21610) and back in (START)."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.orm import Session

from server import duty
from server.log.append import audit
from server.models import StaffState
from server.paging import messages
from server.paging.pager import Pager
from server.site import LiveSite, SiteSource

log = logging.getLogger(__name__)


class OptOut(LiveSite):
    """Records who no longer takes SMS, inside the caller's transaction."""

    def __init__(self, *, site: SiteSource, pager: Pager) -> None:
        self._sites = site
        self._pager = pager

    def opt_in(self, s: Session, staff_id: str, now: datetime) -> None:
        """START: SMS reach this person again."""
        self._set(s, staff_id, False, now)

    def opted_out(self, s: Session, staff_id: str, now: datetime) -> None:
        """STOP (or Twilio's 21610): SMS no longer reach this person; warn the managers
        if they are on duty now."""
        if not self._set(s, staff_id, True, now):
            return
        member = self._site.member(staff_id)
        log.warning("staff %s opted out of SMS (STOP): only calls reach them", staff_id)
        if staff_id in duty.covering(self._site, duty.takeovers(s, now), now):
            for manager in self._site.managers():
                if manager.id != staff_id:
                    self._pager.send_text(
                        manager,
                        messages.opted_out(manager.language, name=member.name),
                        incident_id=None,
                        purpose="opted_out",
                    )

    def _set(self, s: Session, staff_id: str, out: bool, now: datetime) -> bool:
        state = s.get(StaffState, staff_id)
        if state is None:
            state = StaffState(staff_id=staff_id, sms_opted_out=not out, changed_at=now)
            s.add(state)
        changed = state.sms_opted_out != out
        if changed:
            state.sms_opted_out, state.changed_at = out, now
            audit(s, at=now, type="staff.opt_out" if out else "staff.opt_in", staff=staff_id)
        return changed
