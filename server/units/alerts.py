"""A unit's alert: opens its incident (once), pages step 0, tells the unit.

Each alert is one transaction; pages, feedback and texts go out after it commits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.clock import Clock
from panicbutton.wire import Alert, Feedback
from server import incidents
from server.news import RepressNews
from server.paging.pager import Pager
from server.site import LiveSite, SiteSource
from server.units.feedback import Lights, feedback_of

log = logging.getLogger(__name__)


class Alerts(LiveSite):
    """Turns room units' alerts into incidents."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        site: SiteSource,
        clock: Clock,
        pager: Pager,
        lights: Lights,
        news: RepressNews,
        wake: Callable[[], object],
    ) -> None:
        self._sessions = sessions
        self._sites = site
        self._clock = clock
        self._pager = pager
        self._lights = lights
        self._news = news
        self._wake = wake

    def handle(self, alert: Alert, *, started_by: str | None = None) -> Feedback:
        """Record ``alert`` (once), page step 0, and return the feedback for the unit.

        The incident is committed before this returns; the caller confirms
        receipt to the unit only then. A unit missing from the site file still
        pages the staff on duty (someone pressed a button), as an unknown unit.
        ``started_by``: a test alert started from the console by this person
        (see :func:`server.incidents.record_alert`).
        """
        site = self._site  # read once: one configuration for the whole alert
        room = site.room_for_device(alert.device_id)
        if room is None:
            log.error(
                "alert from unit %s, which is not in the site file: paging as an unknown "
                "unit; add it to the site file",
                alert.device_id,
            )
            room = site.unknown_room(alert.device_id)
        now = self._clock.now()
        try:
            with self._sessions.begin() as s:
                result = incidents.record_alert(
                    session=s, site=site, room=room, alert=alert, now=now, started_by=started_by
                )
        except IntegrityError:
            # Another instance committed the same alert first: read its incident.
            with self._sessions.begin() as s:
                result = incidents.record_alert(
                    session=s, site=site, room=room, alert=alert, now=now, started_by=started_by
                )
        if result.refused:
            # NOTE: the unit is told ``resolved`` so that it stops resending an alert
            # that can never be accepted, and its next press starts a new alert that
            # pages for its own room.
            log.error(
                "alert %s from unit %s refused: that alert id belongs to another unit's "
                "incident (a cloned memory card, or a forged unit); told the unit it is over",
                alert.alert_id,
                alert.device_id,
            )
            return self._lights.refuse(alert, now)
        incident = result.incident
        if result.new:
            log.info(
                "incident %d opened: room %s, alert %s",
                incident.id,
                incident.room_id,
                alert.alert_id,
            )
            self._pager.dispatch(result.page_ids)
            self._wake()
        elif result.repressed:
            log.info("incident %d: button pressed again (%d)", incident.id, incident.presses)
        else:
            log.info("alert %s redelivered; incident %d already open", alert.alert_id, incident.id)
        self._lights.show(incident, now)
        if result.repressed:
            # After the unit's feedback: the news (several queries) must not delay it.
            self._news.send(incident.id, now)
            self._wake()  # the job for the news this window holds back
        return feedback_of(incident, now)
