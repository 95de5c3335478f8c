"""Incidents: created from alerts exactly once, acknowledged and resolved by staff.

Every function here runs inside the caller's transaction and writes the audit
event for each change in that same transaction, so the log and the state can
never disagree. Keyword-only arguments; no HTTP, no MQTT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from panicbutton.wire import Alert, FeedbackState
from server.models import AuditEvent, DeviceRecord, Incident, Page
from server.site import Site


class State(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Outcome(StrEnum):
    GENUINE = "genuine"
    FALSE_ALARM = "false_alarm"
    TEST = "test"


FEEDBACK_FOR = {
    State.OPEN: FeedbackState.RECEIVED,
    State.ACKNOWLEDGED: FeedbackState.ACKNOWLEDGED,
    State.RESOLVED: FeedbackState.RESOLVED,
}


def audit(
    session: Session, *, at: datetime, type: str, incident_id: int | None = None, **data: Any
) -> None:
    """Append one event to the incident log (ids and codes only: no names, numbers or text)."""
    session.add(AuditEvent(at=at, type=type, incident_id=incident_id, data=data))


@dataclass
class AlertResult:
    incident: Incident
    new: bool
    page_ids: list[int] = field(default_factory=list)


def record_alert(*, session: Session, site: Site, alert: Alert, now: datetime) -> AlertResult:
    """Open an incident for ``alert``, or return the one it already opened.

    The device's alert id is the idempotency key: a redelivered alert, on any
    path, returns the first incident and queues no new page.
    """
    existing = session.scalar(select(Incident).where(Incident.alert_id == alert.alert_id))
    if existing is not None:
        return AlertResult(existing, new=False)
    room = site.room_for_device(alert.device_id)
    if room is None:  # checked at the boundary; repeated so this function is safe alone
        raise ValueError(f"device {alert.device_id!r} is not in the site file")
    incident = Incident(
        alert_id=alert.alert_id,
        device_id=alert.device_id,
        room_id=room.id,
        kind=str(alert.kind),
        seq=alert.seq,
        pressed_at=alert.pressed_at,
        received_at=now,
        state=State.OPEN,
    )
    session.add(incident)
    session.flush()
    audit(
        session,
        at=now,
        type="alert.raised",
        incident_id=incident.id,
        alert_id=alert.alert_id,
        device=alert.device_id,
        room=room.id,
        seq=alert.seq,
        kind=str(alert.kind),
        device_time=alert.pressed_at.isoformat(),
    )
    _track_sequence(
        session, device_id=alert.device_id, seq=alert.seq, now=now, incident_id=incident.id
    )

    step = site.steps[0]
    for member in site.recipients(step.who):
        page = Page(
            incident_id=incident.id,
            staff_id=member.id,
            channel="sms",
            step=0,
            reply_code=_free_code(session, member.id),
            status="pending",
            created_at=now,
        )
        session.add(page)
        session.flush()
        audit(
            session,
            at=now,
            type="page.queued",
            incident_id=incident.id,
            page=page.id,
            staff=member.id,
            channel="sms",
            step=0,
        )
    page_ids = list(session.scalars(select(Page.id).where(Page.incident_id == incident.id)))
    return AlertResult(incident, new=True, page_ids=page_ids)


def _track_sequence(
    session: Session, *, device_id: str, seq: int, now: datetime, incident_id: int
) -> None:
    device = session.get(DeviceRecord, device_id)
    if device is None:
        device = DeviceRecord(device_id=device_id, last_seq=0, online=True, last_seen=now)
        session.add(device)
    # NOTE: a jump means alerts we never received (or a unit whose outbox was lost).
    if device.last_seq and seq > device.last_seq + 1:
        audit(
            session,
            at=now,
            type="device.sequence_gap",
            incident_id=incident_id,
            device=device_id,
            expected=device.last_seq + 1,
            got=seq,
        )
    device.last_seq = max(device.last_seq, seq)
    device.last_seen = now


def _free_code(session: Session, staff_id: str) -> int:
    """The smallest reply code not used by this person's unresolved incidents."""
    used = set(
        session.scalars(
            select(Page.reply_code)
            .join(Incident, Incident.id == Page.incident_id)
            .where(Page.staff_id == staff_id, Incident.state != State.RESOLVED)
        )
    )
    code = 1
    while code in used:
        code += 1
    return code


def acknowledge(
    *, session: Session, incident: Incident, staff_id: str, via: str, now: datetime
) -> bool:
    """Mark ``incident`` acknowledged by ``staff_id``; False if someone already had."""
    if incident.state != State.OPEN:
        return False
    incident.state = State.ACKNOWLEDGED
    incident.acknowledged_by = staff_id
    incident.acknowledged_at = now
    audit(
        session,
        at=now,
        type="incident.acknowledged",
        incident_id=incident.id,
        staff=staff_id,
        via=via,
    )
    return True


def resolve(
    *, session: Session, incident: Incident, staff_id: str, outcome: Outcome, now: datetime
) -> bool:
    """Close ``incident`` with an outcome (a staff decision); False if already resolved."""
    if incident.state == State.RESOLVED:
        return False
    if incident.state == State.OPEN:
        acknowledge(session=session, incident=incident, staff_id=staff_id, via="resolve", now=now)
    incident.state = State.RESOLVED
    incident.resolved_at = now
    incident.outcome = outcome
    audit(
        session,
        at=now,
        type="incident.resolved",
        incident_id=incident.id,
        staff=staff_id,
        outcome=str(outcome),
    )
    return True


def record_link(*, session: Session, device_id: str, online: bool, now: datetime) -> None:
    """Note a room unit going online or offline (from its retained status / Last Will)."""
    device = session.get(DeviceRecord, device_id)
    if device is None:
        device = DeviceRecord(device_id=device_id, last_seq=0, online=not online, last_seen=now)
        session.add(device)
    if device.online != online:
        audit(
            session, at=now, type="device.online" if online else "device.offline", device=device_id
        )
    device.online = online
    device.last_seen = now
