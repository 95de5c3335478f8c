"""A unit's status (heartbeat, Last Will, clean stop), and a unit going offline or
coming back: a technical incident that pages managers until the unit returns."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.clock import Clock
from panicbutton.wire import Status
from server import incidents
from server.errors import ServerError
from server.escalation import steps
from server.log.append import audit
from server.models import DeviceRecord, Incident, IncidentKind, Outcome, State
from server.news import Tell
from server.paging import messages
from server.paging.pager import Pager
from server.site import LiveSite, Room, SiteSource


class UnknownDeviceError(ServerError, LookupError):
    """A status from a unit the site file does not list."""


class Statuses(LiveSite):
    """Keeps each unit's online state, and opens and closes its offline alarms."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        site: SiteSource,
        clock: Clock,
        pager: Pager,
        tell: Tell,
        wake: Callable[[], object],
    ) -> None:
        self._sessions = sessions
        self._sites = site
        self._clock = clock
        self._pager = pager
        self._tell = tell
        self._wake = wake

    def handle(self, status: Status, *, retained: bool = False) -> None:
        """A unit's status: heartbeat, Last Will or clean stop."""
        room = self._site.room_for_device(status.device_id)
        if room is None:
            raise UnknownDeviceError(f"device {status.device_id!r} is not in the site file")
        with self._sessions.begin() as s:
            back = incidents.record_status(
                session=s, status=status, now=self._clock.now(), retained=retained
            )
        if back:
            self.online(room)

    def offline(self, room: Room, since: datetime) -> None:
        """A unit is offline: a technical incident that pages managers until acknowledged."""
        now = self._clock.now()
        with self._sessions.begin() as s:
            device = s.get(DeviceRecord, room.device)
            if device is None or device.offline_alerted:
                return  # told already (or unknown)
            # NOTE: marked in the same transaction as the incident: never "told" without it.
            device.offline_alerted = True
            incident = Incident(
                alert_id=uuid.uuid4().hex,
                device_id=room.device,
                room_id=room.id,
                kind=IncidentKind.UNIT_OFFLINE,
                seq=0,
                pressed_at=since,
                received_at=now,
                state=State.OPEN,
                presses=1,
            )
            s.add(incident)
            s.flush()
            audit(
                s,
                at=now,
                type="device.offline_alerted",
                incident_id=incident.id,
                device=room.device,
                since=since,
            )
            pages = steps.start(session=s, site=self._site, incident=incident, now=now)
        self._pager.dispatch(pages)
        self._wake()

    def online(self, room: Room) -> None:
        """A unit that managers were told is offline is back: close its technical incidents."""
        now = self._clock.now()
        with self._sessions.begin() as s:
            open_ = list(
                s.scalars(
                    select(Incident).where(
                        Incident.device_id == room.device,
                        Incident.kind == IncidentKind.UNIT_OFFLINE,
                        Incident.state != State.RESOLVED,
                    )
                )
            )
            for incident in open_:
                incidents.resolve(
                    session=s,
                    incident=incident,
                    staff_id="system",
                    outcome=Outcome.RECOVERED,
                    now=now,
                )
        for incident in open_:
            self._tell.paged(
                incident.id,
                lambda m: messages.unit_online(m.language, room=room.label),
                purpose="unit_online",
            )
