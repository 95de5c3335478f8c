"""The mobile button's tables: enrolled phones, check-in sessions and shared positions.

Migration ``0012`` creates them. All three are personal data with their own
retention: a phone's row says whose it is (the log names only the phone), a
check-in holds what the worker chose to share, and a position is where a worker
was during an alarm (the log holds only that a position was shared).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.models import Base


class MobilePhone(Base):
    """A worker's phone, enrolled from a one-time link: the page's public key, the PINs
    chosen at enrolment, and the number the fallbacks (SMS, call) may come from."""

    __tablename__ = "mobile_phones"

    #: 16 hex digits: in the log as ``-phone-<id>``, never the worker's id.
    id: Mapped[str] = mapped_column(String(24), primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("people.id"), index=True)
    #: The page's ECDSA P-256 public key, SubjectPublicKeyInfo DER.
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    #: E.164: the only number whose SMS or call with the fallback code raises an alarm.
    number: Mapped[str] = mapped_column(String(16), index=True)
    #: SHA-256 (hex) of the fallback code the page puts in the SMS and the call.
    fallback_sha256: Mapped[str] = mapped_column(String(64))
    #: argon2id of the check-out PIN, and of the duress PIN (a silent alarm).
    pin_hash: Mapped[str] = mapped_column(String(200))
    duress_hash: Mapped[str] = mapped_column(String(200))
    #: What the worker calls it ("my phone").
    label: Mapped[str] = mapped_column(String(60), default="")
    created_by: Mapped[str] = mapped_column(String(63))
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime | None]
    #: Wrong PINs in a row, and until when check-out is refused after too many.
    pin_failures: Mapped[int] = mapped_column(default=0, server_default="0")
    pin_locked_until: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None] = mapped_column(index=True)
    revoked_by: Mapped[str | None] = mapped_column(String(63))
    #: The alarm (alert id) the worker last raised or pressed by the fallback SMS or call
    #: (migration 0013): its data connection failed, so who is coming is texted to it.
    fallback_alert: Mapped[str | None] = mapped_column(String(32))


class CheckIn(Base):
    """A timed session before a job outside: closed by a check-out with the PIN, or it
    raises a "missed check-out" alarm :data:`server.mobile.checkins.GRACE` after its end."""

    __tablename__ = "mobile_checkins"
    __table_args__ = (UniqueConstraint("phone_id", "client_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    phone_id: Mapped[str] = mapped_column(ForeignKey("mobile_phones.id"), index=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("people.id"), index=True)
    #: The page's own id for the session (32 hex digits): starting it again is a no-op.
    client_id: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime]
    ends_at: Mapped[datetime] = mapped_column(index=True)
    #: What the worker chose to share (an address, a note); "" when nothing.
    note: Mapped[str] = mapped_column(Text, default="")
    #: running -> closed | missed
    state: Mapped[str] = mapped_column(String(16), index=True)
    #: Reminders sent for the current end: 0, 1 (10 minutes before), 2 (2 minutes before).
    reminders: Mapped[int] = mapped_column(default=0, server_default="0")
    closed_at: Mapped[datetime | None]
    #: The missed check-out alarm this session raised, if it did (a random id, kept in
    #: the claim's own transaction: a session raises one).
    alert_id: Mapped[str | None] = mapped_column(String(32))
    #: The silent alarm a duress PIN raised at this session's extension or check-out, if
    #: one did (migration 0014; one per session).
    duress_alert_id: Mapped[str | None] = mapped_column(String(32))
    #: The presence register's stay this session opened.
    presence_id: Mapped[int | None]


class Position(Base):
    """Where a phone was during an alarm, as its Geolocation API said."""

    __tablename__ = "mobile_positions"
    __table_args__ = (UniqueConstraint("incident_id", "taken_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    phone_id: Mapped[str] = mapped_column(String(24))
    latitude: Mapped[float]
    longitude: Mapped[float]
    #: The radius of 95 % confidence, metres, as the phone reported it.
    accuracy: Mapped[float]
    #: When the phone took the fix (on the server's clock), and when the server got it.
    taken_at: Mapped[datetime]
    #: The fix's time as the phone sent it (its own clock; migration 0014): each position
    #: of an alarm must be later than the last (a request sent again is refused).
    sent_taken_at: Mapped[datetime]
    received_at: Mapped[datetime] = mapped_column(index=True)
