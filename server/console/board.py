"""The live board's picture of the site: every room and where its alarm stands, the
units' health, who is on duty; read in one go from the database.

A room is in one of the :class:`RoomState` states. An alarm shows until it is
resolved, then as resolved for :data:`RECENT`; a unit that is offline shows so
whatever its alarm (its button cannot alert). A worker's phone (the mobile button)
shows as a card of its own while one of its alarms does, with how long ago it last
shared its position.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from server import duty
from server.mobile import positions
from server.models import ALARM_KINDS, DeviceRecord, Incident, IncidentKind, Page, State
from server.people.tables import Person
from server.site import PHONE_PREFIX, Site

#: How long a resolved alarm stays on the board.
RECENT = timedelta(minutes=10)


class RoomState(StrEnum):
    """What the board says of a room, worst first in :data:`ORDER`."""

    #: A panic alarm nobody has taken yet: staff are being paged.
    RECEIVED = "received"
    #: The unit holds an alarm the server has not confirmed yet (its outbox).
    SENT = "sent"
    #: Someone is going; the unit's light says help is coming.
    HELP_COMING = "help_coming"
    #: The unit is not heard from: its button cannot alert.
    OFFLINE = "offline"
    #: A test alert is open.
    TEST = "test"
    #: An alarm was resolved a moment ago.
    RESOLVED = "resolved"
    #: Nothing is going on; the unit is online.
    ARMED = "armed"


ORDER = list(RoomState)


@dataclass(frozen=True)
class RoomView:
    room_id: str
    label: str
    device_id: str
    state: RoomState
    online: bool
    last_seen: datetime | None
    #: Alerts waiting in the unit's outbox (from its last heartbeat).
    outbox: int
    error: str
    incident_id: int | None = None
    pressed_at: datetime | None = None
    presses: int = 0
    #: Who is going (their name), once acknowledged.
    going: str | None = None
    #: How many people were paged, and how many pages went out.
    paged: int = 0
    #: A worker's phone, not a room: its alarm's kind (panic, duress, missed_checkout),
    #: and when the newest position it shared was taken (None: none yet).
    phone: bool = False
    kind: str = IncidentKind.PANIC
    position_at: datetime | None = None


@dataclass(frozen=True)
class TechnicalView:
    """An open incident about the system (a unit offline, nobody on duty)."""

    incident_id: int
    kind: str
    room_label: str
    state: str
    since: datetime
    going: str | None


@dataclass(frozen=True)
class BoardView:
    at: datetime
    rooms: list[RoomView]
    technical: list[TechnicalView]
    on_duty: list[str]
    #: Incident ids of alarms nobody has taken (the page is loud while any is open).
    unanswered: list[int] = field(default_factory=list)


def read(session: Session, site: Site, now: datetime) -> BoardView:
    """The board at ``now``: one read of incidents, units, pages and names."""
    incidents = list(
        session.scalars(
            select(Incident)
            .where(
                or_(Incident.state != State.RESOLVED, Incident.resolved_at >= now - RECENT),
            )
            .order_by(Incident.id)
        )
    )
    units = {d.device_id: d for d in session.scalars(select(DeviceRecord))}
    paged: dict[int, int] = {}
    if incidents:
        for incident_id, _staff in session.execute(
            select(Page.incident_id, Page.staff_id)
            .where(Page.incident_id.in_([i.id for i in incidents]))
            .distinct()
        ):
            paged[incident_id] = paged.get(incident_id, 0) + 1
    ids = {i.acknowledged_by for i in incidents if i.acknowledged_by}
    on_duty = duty.covering(site, duty.takeovers(session, now), now)
    ids.update(on_duty)
    query = select(Person.id, Person.name).where(Person.id.in_(ids))
    names: dict[str, str] = dict(session.execute(query).all())
    names.update({s.id: s.name for s in site.staff if s.id not in names})
    by_room: dict[str, Incident] = {}
    by_phone: dict[str, Incident] = {}
    technical = []
    for incident in incidents:
        if incident.room_id.startswith(PHONE_PREFIX) and incident.kind in ALARM_KINDS:
            current = by_phone.get(incident.room_id)
            if current is None or _rank(incident) <= _rank(current):
                by_phone[incident.room_id] = incident
        elif incident.kind in (IncidentKind.PANIC, IncidentKind.TEST):
            current = by_room.get(incident.room_id)
            # An open alarm outranks a resolved one; a newer one of the same kind wins.
            if current is None or _rank(incident) <= _rank(current):
                by_room[incident.room_id] = incident
        elif incident.state != State.RESOLVED:
            technical.append(
                TechnicalView(
                    incident_id=incident.id,
                    kind=incident.kind,
                    room_label=site.room(incident.room_id).label,
                    state=incident.state,
                    since=incident.received_at,
                    going=names.get(incident.acknowledged_by or "", incident.acknowledged_by),
                )
            )
    rooms = [
        _room(room.id, room.label, room.device, units.get(room.device), by_room.get(room.id))
        for room in site.rooms
    ]
    fixes = positions.newest(session, [i.id for i in by_phone.values()])
    rooms += [
        _phone(site.room(room_id).label, incident, fixes.get(incident.id))
        for room_id, incident in by_phone.items()
    ]
    rooms = [
        _with_names(r, names, paged.get(r.incident_id or 0, 0)) if r.incident_id else r
        for r in rooms
    ]
    return BoardView(
        at=now,
        rooms=sorted(rooms, key=lambda r: (ORDER.index(r.state), r.label.casefold())),
        technical=technical,
        on_duty=[names.get(i, i) for i in on_duty],
        unanswered=[
            r.incident_id for r in rooms if r.state is RoomState.RECEIVED and r.incident_id
        ],
    )


def _rank(incident: Incident) -> int:
    return 1 if incident.state == State.RESOLVED else 0


def _room(
    room_id: str,
    label: str,
    device_id: str,
    unit: DeviceRecord | None,
    incident: Incident | None,
) -> RoomView:
    online = bool(unit and unit.online)
    outbox = unit.outbox if unit else 0
    state = RoomState.ARMED if online else RoomState.OFFLINE
    if incident is not None:
        if incident.state == State.OPEN:
            state = RoomState.TEST if incident.kind == IncidentKind.TEST else RoomState.RECEIVED
        elif incident.state == State.ACKNOWLEDGED:
            state = RoomState.HELP_COMING
        elif online:
            state = RoomState.RESOLVED
    if state in (RoomState.ARMED, RoomState.RESOLVED) and outbox:
        state = RoomState.SENT
    return RoomView(
        room_id=room_id,
        label=label,
        device_id=device_id,
        state=state,
        online=online,
        last_seen=unit.last_seen if unit else None,
        outbox=outbox,
        error=unit.error if unit else "",
        incident_id=incident.id if incident is not None else None,
        pressed_at=incident.pressed_at if incident is not None else None,
        presses=incident.presses if incident is not None else 0,
        going=incident.acknowledged_by if incident is not None else None,
    )


def _phone(label: str, incident: Incident, position_at: datetime | None) -> RoomView:
    """A worker's phone's card: where its alarm stands (there is no unit to be offline)."""
    state = {
        State.OPEN: RoomState.RECEIVED,
        State.ACKNOWLEDGED: RoomState.HELP_COMING,
    }.get(State(incident.state), RoomState.RESOLVED)
    return RoomView(
        room_id=incident.room_id,
        label=label,
        device_id=incident.device_id,
        state=state,
        online=True,
        last_seen=None,
        outbox=0,
        error="",
        incident_id=incident.id,
        pressed_at=incident.pressed_at,
        presses=incident.presses,
        going=incident.acknowledged_by,
        phone=True,
        kind=incident.kind,
        position_at=position_at,
    )


def _with_names(room: RoomView, names: dict[str, str], paged: int) -> RoomView:
    going = names.get(room.going, room.going) if room.going else None
    return replace(room, going=going, paged=paged)
