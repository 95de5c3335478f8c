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

from panicbutton.wire import Alert, AlertKind, FeedbackState, LinkState, Status
from server.models import AuditEvent, DeviceRecord, Incident, Page
from server.site import Room, Site


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
    repressed: bool = False


def record_alert(
    *, session: Session, site: Site, room: Room, alert: Alert, now: datetime
) -> AlertResult:
    """Open an incident for ``alert``, or return the one it already opened.

    The device's alert id is the idempotency key: a redelivered alert, on any
    path, returns the first incident and queues no new page.
    """
    existing = session.scalar(select(Incident).where(Incident.alert_id == alert.alert_id))
    if existing is not None:
        if alert.presses <= existing.presses:
            return AlertResult(existing, new=False)
        # The worker pressed again while this alert was open: same incident, counted.
        existing.presses = alert.presses
        audit(
            session,
            at=now,
            type="alert.re_pressed",
            incident_id=existing.id,
            alert_id=alert.alert_id,
            presses=alert.presses,
        )
        return AlertResult(existing, new=False, repressed=True)
    incident = Incident(
        alert_id=alert.alert_id,
        device_id=alert.device_id,
        room_id=room.id,
        kind=str(alert.kind),
        seq=alert.seq,
        pressed_at=alert.pressed_at,
        received_at=now,
        state=State.OPEN,
        presses=alert.presses,
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

    # A test alert pages only the test recipients, never the staff on duty.
    who = "test" if alert.kind is AlertKind.TEST else site.steps[0].who
    for member in site.recipients(who):
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
    # NOTE: a jump means alerts we never received; a step back means the unit's
    # outbox was lost or replaced (the unit says so in its status too).
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
    elif device.last_seq and seq <= device.last_seq:
        audit(
            session,
            at=now,
            type="device.sequence_reset",
            incident_id=incident_id,
            device=device_id,
            previous=device.last_seq,
            got=seq,
        )
        device.last_seq = seq
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


def record_status(*, session: Session, status: Status, now: datetime) -> bool:
    """Note a unit's status (heartbeat, Last Will or clean stop).

    Returns True when a unit that managers were told is offline has come back.
    """
    device = session.get(DeviceRecord, status.device_id)
    if device is None:
        device = DeviceRecord(device_id=status.device_id, last_seq=0, online=False)
        session.add(device)
    online = status.state is LinkState.ONLINE
    back = False
    if online and not device.online:
        audit(session, at=now, type="device.online", device=status.device_id)
        back = bool(device.offline_alerted)
        device.offline_since, device.offline_alerted = None, False
    elif not online and device.online:
        mark_offline(session=session, device=device, reason="will", now=now)
    device.online = online
    device.last_seen = now
    if online:
        device.error, device.uptime = status.error, status.uptime
        device.outbox, device.version = status.outbox, status.version[:32]
    return back


def mark_offline(*, session: Session, device: DeviceRecord, reason: str, now: datetime) -> None:
    """Record a unit going offline: ``will`` (the broker saw it drop) or ``silent``."""
    device.online = False
    device.offline_since = now
    audit(session, at=now, type="device.offline", device=device.device_id, reason=reason)
