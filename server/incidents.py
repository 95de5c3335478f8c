"""Incidents: created from alerts exactly once, acknowledged and resolved by staff.

Every function here runs inside the caller's transaction and writes the audit
event for each change in that same transaction, so the log and the state can
never disagree. Keyword-only arguments; no HTTP, no MQTT.

(Over 300 lines: an incident's states and the checks between them — once per
alert, re-press, reopen, acknowledge, resolve, a unit's sequence — are one
machine, read best in one file.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from panicbutton.wire import Alert, FeedbackState, LinkState, Status
from server.db import changed
from server.escalation import steps
from server.log.append import audit
from server.models import (
    DeviceRecord,
    Incident,
    IncidentKind,
    JobKind,
    LogEntry,
    Outcome,
    State,
)
from server.people.presence import present_count
from server.site import Room, Site

#: Seconds between two re-press texts to one person about one incident.
NEWS_EVERY = 30


FEEDBACK_FOR = {
    State.OPEN: FeedbackState.RECEIVED,
    State.ACKNOWLEDGED: FeedbackState.ACKNOWLEDGED,
    State.RESOLVED: FeedbackState.RESOLVED,
}


@dataclass
class AlertResult:
    incident: Incident
    new: bool
    page_ids: list[int] = field(default_factory=list)
    repressed: bool = False
    #: The alert id is another unit's (``incident`` is that unit's): refused, see record_alert.
    refused: bool = False
    #: Opened with step 0 left pending (``defer``): steps.run_first pages it.
    deferred: bool = False


def record_alert(
    *,
    session: Session,
    site: Site,
    room: Room,
    alert: Alert,
    now: datetime,
    started_by: str | None = None,
    defer: bool = False,
    claimed_by: str | None = None,
) -> AlertResult:
    """Open an incident for ``alert``, or return the one it already opened.

    The device's alert id is the idempotency key: a redelivered alert, on any
    path, returns the first incident and queues no new page. An incident is
    found by (unit, alert id): an alert id the server holds for another unit is
    refused (``refused``) and logged once, never counted on that room.

    ``started_by``: a test alert started from the server by this person (the
    console), not by the unit: logged as ``test.started``, its ``seq`` 0 (it is
    not one of the unit's numbers, so the unit's sequence mark is left alone).

    ``defer``: a new incident's step 0 is left pending (:func:`steps.defer`), for the
    caller to run after this commit with :func:`steps.run_first` (its ``deferred``);
    ``claimed_by``: the server instance that will, whose claim the job carries.
    """
    return _record(
        session=session,
        site=site,
        room=room,
        incoming=_from_unit(alert, started_by),
        now=now,
        started_by=started_by,
        defer=defer,
        claimed_by=claimed_by,
    )


@dataclass(frozen=True, slots=True)
class Incoming:
    """An alarm as it enters, from a unit's alert or a worker's phone. ``via`` says how
    a phone's alarm came (``phone``, ``sms``, ``call``, ``checkin``); "" for a unit."""

    alert_id: str
    device_id: str
    kind: str
    seq: int
    presses: int
    pressed_at: datetime
    via: str = ""


def record_phone_alarm(
    *, session: Session, site: Site, incoming: Incoming, now: datetime
) -> AlertResult:
    """Open an incident for an alarm from a worker's phone (``incoming.device_id`` is
    ``phone:<id>``), or return the one its alert id opened already, exactly as
    :func:`record_alert` does for a unit. No unit sequence is tracked (``seq`` 0)."""
    return _record(
        session=session, site=site, room=site.room(incoming.device_id), incoming=incoming, now=now
    )


def _record(
    *,
    session: Session,
    site: Site,
    room: Room,
    incoming: Incoming,
    now: datetime,
    started_by: str | None = None,
    defer: bool = False,
    claimed_by: str | None = None,
) -> AlertResult:
    existing = session.scalar(select(Incident).where(Incident.alert_id == incoming.alert_id))
    if existing is not None and existing.device_id != incoming.device_id:
        _refuse(session, incoming=incoming, now=now)
        return AlertResult(existing, new=False, refused=True)
    if existing is not None:
        if incoming.presses <= existing.presses:
            return AlertResult(existing, new=False)
        # The worker pressed again while this alert was open: same incident, counted.
        existing.presses = incoming.presses
        audit(
            session,
            at=now,
            type="alert.re_pressed",
            incident_id=existing.id,
            alert_id=incoming.alert_id,
            presses=incoming.presses,
        )
        if existing.state == State.RESOLVED and existing.kind == IncidentKind.PANIC:
            # Pressed again after staff closed it (the unit never heard "resolved"):
            # someone is in danger now. Reopen and page whoever is on duty now.
            return AlertResult(
                existing,
                new=True,
                repressed=True,
                page_ids=_reopen(session, site=site, incident=existing, now=now),
            )
        # NOTE: the news of a press is throttled (server.news); this job, due when the
        # window of the news sent now ends, sends what the window held back. Persisted,
        # so a restart loses no news.
        steps.schedule(
            session,
            incident_id=existing.id,
            kind=JobKind.REPRESS_NEWS,
            step=incoming.presses,
            due=now + timedelta(seconds=NEWS_EVERY),
        )
        return AlertResult(existing, new=False, repressed=True)
    incident = _incident(room, incoming, now)
    session.add(incident)
    session.flush()
    return _opened(
        session=session,
        site=site,
        incident=incident,
        incoming=incoming,
        now=now,
        present=present_count(session),
        started_by=started_by,
        defer=defer,
        claimed_by=claimed_by,
    )


def record_alerts(
    *,
    session: Session,
    site: Site,
    alerts: Sequence[tuple[Alert, Room]],
    now: datetime,
    claimed_by: str | None = None,
) -> list[AlertResult]:
    """:func:`record_alert` (``defer``) for alerts that came together (a storm), in the
    caller's transaction: what became of each, in order. The new incidents are opened
    with a few statements for the whole batch (the alerts already recorded, the units'
    sequence marks, the incidents in one INSERT), not a few for each; an alert already
    recorded (or twice in the batch) goes as :func:`record_alert` takes it."""
    incoming = [_from_unit(alert) for alert, _ in alerts]
    ids = [i.alert_id for i in incoming]
    known = set(session.scalars(select(Incident.alert_id).where(Incident.alert_id.in_(ids))))
    fresh = [
        k for k, i in enumerate(incoming) if i.alert_id not in known and ids.index(i.alert_id) == k
    ]
    results: dict[int, AlertResult] = {}
    if fresh:
        # Every unit's mark at once (a unit that never sent a status has no row yet).
        devices = {
            d.device_id: d
            for d in session.scalars(
                select(DeviceRecord).where(
                    DeviceRecord.device_id.in_({incoming[k].device_id for k in fresh})
                )
            )
        }
        present = present_count(session)
        opened = [_incident(alerts[k][1], incoming[k], now) for k in fresh]
        session.add_all(opened)
        session.flush()
        for k, incident in zip(fresh, opened, strict=True):
            results[k] = _opened(
                session=session,
                site=site,
                incident=incident,
                incoming=incoming[k],
                now=now,
                present=present,
                defer=True,
                claimed_by=claimed_by,
                devices=devices,
            )
    for k, (alert, room) in enumerate(alerts):
        if k not in results:
            results[k] = record_alert(
                session=session,
                site=site,
                room=room,
                alert=alert,
                now=now,
                defer=True,
                claimed_by=claimed_by,
            )
    return [results[k] for k in range(len(alerts))]


def _from_unit(alert: Alert, started_by: str | None = None) -> Incoming:
    return Incoming(
        alert_id=alert.alert_id,
        device_id=alert.device_id,
        kind=str(alert.kind),
        seq=0 if started_by else alert.seq,
        presses=alert.presses,
        pressed_at=alert.pressed_at,
    )


def _incident(room: Room, incoming: Incoming, now: datetime) -> Incident:
    return Incident(
        alert_id=incoming.alert_id,
        device_id=incoming.device_id,
        room_id=room.id,
        kind=incoming.kind,
        seq=incoming.seq,
        pressed_at=incoming.pressed_at,
        received_at=now,
        state=State.OPEN,
        presses=incoming.presses,
    )


def _opened(
    *,
    session: Session,
    site: Site,
    incident: Incident,
    incoming: Incoming,
    now: datetime,
    present: int,
    started_by: str | None = None,
    defer: bool = False,
    claimed_by: str | None = None,
    devices: dict[str, DeviceRecord] | None = None,
) -> AlertResult:
    """A new incident, inserted: its log entry, the unit's sequence, its step 0."""
    extra = {"via": incoming.via} if incoming.via else {}
    audit(
        session,
        at=now,
        type="alert.raised",
        incident_id=incident.id,
        key=f"alert:{incoming.alert_id}",
        alert_id=incoming.alert_id,
        device=incoming.device_id,
        room=incident.room_id,
        seq=incident.seq,
        kind=incoming.kind,
        device_time=incoming.pressed_at,
        # The presence register's count, in the alert's own transaction: no names.
        present=present,
        **extra,
    )
    if started_by:
        audit(
            session,
            at=now,
            type="test.started",
            incident_id=incident.id,
            device=incoming.device_id,
            by=started_by,
        )
    elif not incoming.via:
        _track_sequence(
            session,
            device_id=incoming.device_id,
            seq=incoming.seq,
            now=now,
            incident_id=incident.id,
            devices=devices,
        )

    if defer:
        steps.defer(session, incident=incident, now=now, by=claimed_by)
        return AlertResult(incident, new=True, deferred=True)
    page_ids = steps.start(session=session, site=site, incident=incident, now=now)
    return AlertResult(incident, new=True, page_ids=page_ids)


def _refuse(session: Session, *, incoming: Incoming, now: datetime) -> None:
    """Log an alert whose id belongs to another unit's incident, once per unit and id."""
    key = f"refused:{incoming.device_id}:{incoming.alert_id}"
    if session.scalar(select(LogEntry.n).where(LogEntry.key == key)) is not None:
        return
    audit(
        session,
        at=now,
        type="alert.refused",
        key=key,
        alert_id=incoming.alert_id,
        device=incoming.device_id,
        seq=incoming.seq,
    )


def _reopen(session: Session, *, site: Site, incident: Incident, now: datetime) -> list[int]:
    incident.round += 1
    incident.state = State.OPEN
    incident.acknowledged_by = incident.acknowledged_at = None
    incident.resolved_at = incident.outcome = None
    audit(
        session,
        at=now,
        type="incident.reopened",
        incident_id=incident.id,
        round=incident.round,
        presses=incident.presses,
    )
    return steps.start(session=session, site=site, incident=incident, now=now)


#: The most one alert may move a unit's sequence mark forward. A jump beyond it is
#: flagged and moves the mark only when the unit's next alert goes on from there:
#: one garbled or forged ``seq`` (say 10**9) must not hide every later gap.
MAX_SEQ_STEP = 1000


def _track_sequence(
    session: Session,
    *,
    device_id: str,
    seq: int,
    now: datetime,
    incident_id: int,
    devices: dict[str, DeviceRecord] | None = None,
) -> None:
    """Compare a new alert's ``seq`` with the unit's mark (the highest accepted so far)
    and log what does not follow: a gap, a counter reset to 1, or a step back.
    ``devices``: the batch's units read already (one not there has no row yet)."""
    device = session.get(DeviceRecord, device_id) if devices is None else devices.get(device_id)
    if device is None:
        device = DeviceRecord(device_id=device_id, last_seq=0, online=True, last_seen=now)
        session.add(device)
        if devices is not None:
            devices[device_id] = device
    device.last_seen = now
    mark = device.last_seq
    if seq > mark + 1:
        previous = session.scalar(
            select(Incident.seq)
            # Before this one: a later alert of the unit may be in the same batch.
            .where(Incident.device_id == device_id, Incident.id < incident_id, Incident.seq > 0)
            .order_by(Incident.id.desc())
            .limit(1)
        )
        if previous == seq - 1 and previous > mark:
            # The unit goes on from a jump flagged at its last alert: follow it.
            device.last_seq = seq
            return
        if mark or seq > MAX_SEQ_STEP:
            # NOTE: alerts we never received (a first alert far above 1 is flagged too).
            audit(
                session,
                at=now,
                type="device.sequence_gap",
                incident_id=incident_id,
                device=device_id,
                expected=mark + 1,
                got=seq,
            )
        if seq - mark <= MAX_SEQ_STEP:
            device.last_seq = seq
    elif seq == 1 and mark:
        # A fresh outbox (replaced SD card, or a corrupt file moved aside).
        audit(
            session,
            at=now,
            type="device.sequence_reset",
            incident_id=incident_id,
            device=device_id,
            previous=mark,
            got=seq,
        )
        device.last_seq = seq
    elif seq <= mark:
        # NOTE: a number at or below the mark that is not a reset: an old outbox put
        # back, or a unit replaying numbers. The mark stays where it is.
        audit(
            session,
            at=now,
            type="device.sequence_back",
            incident_id=incident_id,
            device=device_id,
            previous=mark,
            got=seq,
        )
    else:
        device.last_seq = seq


def _move(
    session: Session, incident: Incident, allowed: ColumnElement[bool], **values: object
) -> bool:
    """Change ``incident`` only if ``allowed`` still holds in the database (a conditional
    UPDATE, safe against a racing thread or server); True if this call won."""
    won = changed(
        session,
        update(Incident)
        .where(Incident.id == incident.id, allowed)
        .values(**values)
        .execution_options(synchronize_session=False),
    )
    session.refresh(incident)
    return bool(won)


def acknowledge(
    *, session: Session, incident: Incident, staff_id: str, via: str, now: datetime
) -> bool:
    """Mark ``incident`` acknowledged by ``staff_id``; False if someone already had.

    NOTE: a conditional UPDATE, so two people replying at the same instant (on
    two threads or two servers) cannot both be the one who is going.
    """
    if not _move(
        session,
        incident,
        Incident.state == State.OPEN,
        state=State.ACKNOWLEDGED,
        acknowledged_by=staff_id,
        acknowledged_at=now,
    ):
        return False
    audit(
        session,
        at=now,
        type="incident.acknowledged",
        incident_id=incident.id,
        staff=staff_id,
        via=via,
    )
    steps.acknowledged(session, incident=incident, now=now)
    return True


def resolve(
    *, session: Session, incident: Incident, staff_id: str, outcome: Outcome, now: datetime
) -> bool:
    """Close ``incident`` with an outcome (a staff decision); False if already resolved."""
    if incident.state == State.RESOLVED:
        return False
    if incident.state == State.OPEN:
        acknowledge(session=session, incident=incident, staff_id=staff_id, via="resolve", now=now)
    if not _move(
        session,
        incident,
        Incident.state != State.RESOLVED,
        state=State.RESOLVED,
        resolved_at=now,
        outcome=outcome,
    ):
        return False
    audit(
        session,
        at=now,
        type="incident.resolved",
        incident_id=incident.id,
        staff=staff_id,
        outcome=str(outcome),
    )
    steps.resolved(session, incident=incident)
    return True


def record_status(
    *, session: Session, status: Status, now: datetime, retained: bool = False
) -> bool:
    """Note a unit's status (heartbeat, Last Will or clean stop).

    A *retained* "online" (replayed by the broker when the server connects) is
    no proof of life: it may be hours old. Only live statuses count as one.
    Returns True when a unit that managers were told is offline has come back.
    """
    device = session.get(DeviceRecord, status.device_id)
    if device is None:
        device = DeviceRecord(device_id=status.device_id, last_seq=0, online=False)
        session.add(device)
    online = status.state is LinkState.ONLINE
    if retained and online:
        return False
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
