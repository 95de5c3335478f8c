"""Tables (SQLAlchemy 2). Alembic migrations in ``server/migrations`` create them.

The incident log holds pseudonymous ids only (room, device and staff ids);
names and phone numbers stay in the site file.

(Over 300 lines: every table and the closed sets of values its columns hold, in
one place, as the migrations are written against them.)
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class IncidentKind(StrEnum):
    """What raised an incident: a room's button (``panic``, or ``test`` from its self-test
    or a test press) or the server's supervision (``unit_offline``, a technical alert;
    ``duty_gap``: workers are present and no reference person is on duty), or a worker's
    phone (``panic`` from its button, ``duress`` and ``missed_checkout``)."""

    PANIC = "panic"
    TEST = "test"
    UNIT_OFFLINE = "unit_offline"
    DUTY_GAP = "duty_gap"
    #: From a worker's phone: the duress PIN at check-out (a silent alarm; the phone
    #: shows a normal check-out), or a check-in session not closed in time.
    DURESS = "duress"
    MISSED_CHECKOUT = "missed_checkout"


#: Incidents about the system, not a person: they page managers, never the room's staff.
TECHNICAL_KINDS = (IncidentKind.UNIT_OFFLINE, IncidentKind.DUTY_GAP)
#: Incidents from a room unit's button: they get feedback on its light.
FROM_BUTTON = (IncidentKind.PANIC, IncidentKind.TEST)
#: Incidents about a person in danger: paged by the site's escalation plan.
ALARM_KINDS = (IncidentKind.PANIC, IncidentKind.DURESS, IncidentKind.MISSED_CHECKOUT)


# An incident's state: open -> acknowledged -> resolved. (No docstring: the HTTP
# contract names this schema "State" with none.)
class State(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


# How an incident ended, as the person who resolved it said.
class Outcome(StrEnum):
    GENUINE = "genuine"
    FALSE_ALARM = "false_alarm"
    TEST = "test"
    #: A technical alert that ended by itself (the unit came back).
    RECOVERED = "recovered"


class PageStatus(StrEnum):
    """Our side of a page's hand-over to the provider: pending -> sending -> sent |
    failed, or cancelled when its incident moved on while it waited."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobKind(StrEnum):
    """An escalation job: step ``n`` of the frozen plan, the follow-up of an acknowledged
    incident still open, or re-press news held back by its throttle."""

    STEP = "step"
    FOLLOW_UP = "follow_up"
    REPRESS_NEWS = "repress_news"


class JobStatus(StrEnum):
    """pending -> running -> done | cancelled."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use aware UTC times")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Incident(Base):
    """One press of one room's button; ``alert_id`` makes redeliveries idempotent."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(primary_key=True)
    alert_id: Mapped[str] = mapped_column(String(32), unique=True)
    device_id: Mapped[str] = mapped_column(String(63), index=True)
    room_id: Mapped[str] = mapped_column(String(63))
    kind: Mapped[str] = mapped_column(String(16))
    seq: Mapped[int]
    #: Presses of this alert's button counted so far (re-presses while it is open).
    presses: Mapped[int] = mapped_column(default=1, server_default="1")
    #: Escalation round: 0, then +1 each time a press reopens a resolved incident.
    round: Mapped[int] = mapped_column(default=0, server_default="0")
    #: The device's clock at the press: kept for the record, never used for ordering.
    pressed_at: Mapped[datetime]
    received_at: Mapped[datetime]
    #: open -> acknowledged -> resolved
    state: Mapped[str] = mapped_column(String(16), index=True)
    #: The escalation plan copied at trigger time (who, which channel, when); roster
    #: edits after this do not change a running incident.
    plan: Mapped[dict[str, Any] | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(63))
    acknowledged_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(16))


class Page(Base):
    """One message to one staff member about one incident.

    ``reply_code`` is what that person replies to acknowledge: random digits
    (longer as they have more unresolved incidents, see server.escalation.reply_codes),
    the same on every page of one round of one incident to that person, and not
    used by any of their other unresolved incidents nor by one resolved within
    reply_codes.CODE_HOLD.
    """

    __tablename__ = "pages"
    __table_args__ = (UniqueConstraint("incident_id", "staff_id", "channel", "step"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    staff_id: Mapped[str] = mapped_column(String(63), index=True)
    channel: Mapped[str] = mapped_column(String(8))
    step: Mapped[int] = mapped_column(Integer, default=0)
    reply_code: Mapped[int]
    #: pending -> sending -> sent | failed (our side of the hand-over to the provider)
    status: Mapped[str] = mapped_column(String(16), index=True)
    #: What the provider last said: delivered, undelivered, failed, busy, no-answer,
    #: completed ... Never an acknowledgement, even "delivered" or "completed".
    provider_status: Mapped[str | None] = mapped_column(String(24))
    provider_sid: Mapped[str | None] = mapped_column(String(64), index=True)
    error: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    #: The server instance that claimed the page ("sending"), and until when its claim
    #: holds unless that instance's heartbeat renews it (:mod:`server.instances`).
    claimed_by: Mapped[str | None] = mapped_column(String(63))
    lease_until: Mapped[datetime | None]


class LogEntry(Base):
    """The incident log: one row per event, appended in the transaction of the change.

    ``body`` is the entry's exact canonical bytes (``panicbutton.log.spec``): what
    was hashed, and what an export hands out. The other columns repeat parts of
    it for queries only; the verifier reads nothing but ``body``. Rows are never
    updated or deleted (PostgreSQL triggers refuse it; see migration 0004).
    """

    __tablename__ = "log_entries"

    n: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(index=True)
    type: Mapped[str] = mapped_column(String(48), index=True)
    incident_id: Mapped[int | None] = mapped_column(index=True)
    #: An idempotency key ("alert:<alert id>"), unique: a redelivered alert can
    #: never take a second entry number.
    key: Mapped[str | None] = mapped_column(String(96), unique=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)

    @property
    def data(self) -> dict[str, Any]:
        """The event's data fields, read back from the stored bytes."""
        data: dict[str, Any] = json.loads(self.body)["data"]
        return data


class LogState(Base):
    """The log's head, one row: its size and the right edge of its Merkle tree.

    Appending updates it under its row lock, in the same transaction as the
    entries, so numbers are gapless and two writers cannot take the same one.
    It is a cache of what ``log_entries`` implies; the verifier never trusts it.
    """

    __tablename__ = "log_state"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    size: Mapped[int]
    #: The frontier's hashes, 32 bytes each, concatenated.
    frontier: Mapped[bytes] = mapped_column(LargeBinary)
    #: The leaf hash of the newest entry (the next entry's ``prev``).
    last_leaf: Mapped[bytes] = mapped_column(LargeBinary)


class LogCheckpoint(Base):
    """A signed checkpoint (C2SP tlog-checkpoint note) of the log at ``size``."""

    __tablename__ = "log_checkpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    size: Mapped[int] = mapped_column(index=True)
    at: Mapped[datetime]
    note: Mapped[str] = mapped_column(Text)


class PersonalData(Base):
    """Personal data kept apart from the log: names and numbers of a roster, notes,
    justifications. A log entry holds only ``ref`` and a salted commitment to
    (ref, salt, value); purging the row at the end of retention leaves the log
    verifiable and appends a ``record.redacted`` entry.
    """

    __tablename__ = "personal_data"

    ref: Mapped[str] = mapped_column(String(40), primary_key=True)
    #: The retention class: note, roster, access or review (see server/retention.py).
    kind: Mapped[str] = mapped_column(String(16), index=True)
    salt: Mapped[bytes] = mapped_column(LargeBinary)
    value: Mapped[Any] = mapped_column(JSON)
    #: Pseudonymous ids of the people this row is about (for a person's export).
    subjects: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime]


class DeviceRecord(Base):
    """What the server knows of each room unit's link and sequence."""

    __tablename__ = "devices"

    device_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    last_seq: Mapped[int] = mapped_column(default=0)
    online: Mapped[bool] = mapped_column(default=False)
    last_seen: Mapped[datetime | None]
    #: When the unit was last seen going offline (Last Will, clean stop or silence).
    offline_since: Mapped[datetime | None]
    #: Whether managers were told it is offline (so they are told when it returns).
    offline_alerted: Mapped[bool] = mapped_column(default=False, server_default=false())
    #: The unit's own word on its health, from its heartbeat ("" when healthy).
    error: Mapped[str] = mapped_column(String(200), default="", server_default="")
    uptime: Mapped[int] = mapped_column(default=0, server_default="0")
    outbox: Mapped[int] = mapped_column(default=0, server_default="0")
    version: Mapped[str] = mapped_column(String(32), default="", server_default="")


class WebhookReceipt(Base):
    """Provider ids of webhooks already handled, so a replay changes nothing."""

    __tablename__ = "webhook_receipts"

    key: Mapped[str] = mapped_column(String(96), primary_key=True)
    at: Mapped[datetime]


class EscalationJob(Base):
    """One due step of an incident's escalation, persisted so a restart loses none.

    ``kind`` is ``step`` (step ``n`` of the frozen plan, repeats counting on),
    ``follow_up`` (an acknowledged incident still not resolved) or
    ``repress_news`` (re-press news held back by its throttle; ``step`` is the
    press count that scheduled it). A job is
    claimed with a conditional UPDATE; the pages it creates are unique per
    (incident, staff, channel, step), so running a job twice sends nothing twice.
    """

    __tablename__ = "escalation_jobs"
    __table_args__ = (UniqueConstraint("incident_id", "kind", "step"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    step: Mapped[int]
    due_at: Mapped[datetime] = mapped_column(index=True)
    #: pending -> running -> done | cancelled
    status: Mapped[str] = mapped_column(String(16), index=True)
    claimed_at: Mapped[datetime | None]
    done_at: Mapped[datetime | None]
    #: The server instance running the job, and when its claim lapses (the job is one
    #: short transaction: a claim is not renewed).
    claimed_by: Mapped[str | None] = mapped_column(String(63))
    lease_until: Mapped[datetime | None]


class DutyOverride(Base):
    """ "I take over now": this person is on duty from ``start_at`` to ``end_at``."""

    __tablename__ = "duty_overrides"

    id: Mapped[int] = mapped_column(primary_key=True)
    staff_id: Mapped[str] = mapped_column(String(63), index=True)
    start_at: Mapped[datetime]
    end_at: Mapped[datetime]


class StaffState(Base):
    """What the carrier knows of a staff phone: opted out of SMS (STOP) or not."""

    __tablename__ = "staff_state"

    staff_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    sms_opted_out: Mapped[bool] = mapped_column(default=False, server_default=false())
    changed_at: Mapped[datetime]


class ServerInstance(Base):
    """A server process on this database, and when it last said it is alive.

    Each instance renews its row every :data:`server.instances.HEARTBEAT` seconds; one
    silent for :data:`server.instances.LEASE` seconds has stopped, and the pages and
    escalation jobs it claimed are taken over by a live one.
    """

    __tablename__ = "server_instances"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    started_at: Mapped[datetime]
    seen_at: Mapped[datetime]
