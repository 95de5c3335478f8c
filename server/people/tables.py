"""The tables of people: accounts, roles, sign-in, tokens, presence, the violence register,
and the site's live configuration.

Migration ``0007`` creates them. Secrets are stored hashed (SHA-256 of a random
token: tokens, session ids, enrolment links, phone codes) or as argon2id
(passwords, kiosk PINs); a TOTP seed must be readable to check a code, so it is kept as is
and the database file is the server user's only (see ``server.db``).

(Over 300 lines would be too many for one noun; each table here is one noun of
the people side, and the migration is written against them all.)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.models import Base


class Person(Base):
    """Someone with an account. ``id`` is pseudonymous (the site's id rule) and is the
    only reference to them in the log; ``name`` and ``phone`` are personal data."""

    __tablename__ = "people"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    #: What colleagues read (a worker's chosen code is enough); never in the log.
    name: Mapped[str] = mapped_column(String(200))
    #: E.164, or None (workers and inspectors need none).
    phone: Mapped[str | None] = mapped_column(String(16), unique=True)
    language: Mapped[str] = mapped_column(String(2), default="en")
    #: When the owner proved the phone is theirs (a code sent to it); None: not paged.
    phone_confirmed_at: Mapped[datetime | None]
    #: What the provider last said is wrong with the phone ("" when nothing).
    phone_problem: Mapped[str] = mapped_column(String(200), default="", server_default="")
    created_at: Mapped[datetime]
    #: When the account was closed; a closed account signs in nowhere and is paged never.
    closed_at: Mapped[datetime | None]


class RoleGrant(Base):
    """One role held by one person, from ``granted_at``; an inspector's ends at
    ``expires_at``; ``revoked_at`` ends any grant early."""

    __tablename__ = "role_grants"

    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("people.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    granted_by: Mapped[str] = mapped_column(String(63))
    granted_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Passkey(Base):
    """A WebAuthn credential (passkey) registered by a person."""

    __tablename__ = "passkeys"

    #: The credential id, base64url without padding.
    id: Mapped[str] = mapped_column(String(1400), primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("people.id"), index=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    sign_count: Mapped[int] = mapped_column(default=0)
    transports: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: What the person calls it ("phone", "laptop").
    label: Mapped[str] = mapped_column(String(60), default="")
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]


class Password(Base):
    """A person's fallback sign-in: an argon2id hash, and an optional TOTP seed."""

    __tablename__ = "passwords"

    person_id: Mapped[str] = mapped_column(ForeignKey("people.id"), primary_key=True)
    hash: Mapped[str] = mapped_column(String(200))
    changed_at: Mapped[datetime]
    #: Base32 TOTP seed; None until the person turns TOTP on.
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    #: The last TOTP time step accepted, so a code is never accepted twice.
    totp_last_step: Mapped[int] = mapped_column(default=0, server_default="0")


class KioskPin(Base):
    """A person's PIN for reception screens (argon2id; :mod:`server.people.kiosk`).
    Migration ``0011``."""

    __tablename__ = "kiosk_pins"

    person_id: Mapped[str] = mapped_column(ForeignKey("people.id"), primary_key=True)
    hash: Mapped[str] = mapped_column(String(200))
    changed_at: Mapped[datetime]


class EnrolmentLink(Base):
    """A one-time link to set up sign-in (``enrol``) or to recover it (``recover``)."""

    __tablename__ = "enrolment_links"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("people.id"), index=True)
    purpose: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str] = mapped_column(String(63))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class WebSession(Base):
    """A signed-in browser. The cookie holds the id; only its SHA-256 is stored."""

    __tablename__ = "web_sessions"

    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("people.id"), index=True)
    #: The CSRF token every form of this session must carry.
    csrf: Mapped[str] = mapped_column(String(64))
    #: SHA-256 of the browser's User-Agent at sign-in: a stolen cookie from another
    #: browser is refused.
    agent_sha256: Mapped[str] = mapped_column(String(64))
    #: How the person signed in: passkey, password, password+totp, link.
    method: Mapped[str] = mapped_column(String(24))
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    #: Why the person opens incident records in this session (asked once by the
    #: console; personal data: each view also records it, and it is blanked when the
    #: session ends).
    justification: Mapped[str | None] = mapped_column(Text, default=None)


class ApiToken(Base):
    """A personal API token: shown once, stored as the SHA-256 of its secret."""

    __tablename__ = "api_tokens"

    #: The public part of the token (``pbt_<id>_<secret>``), to list and revoke it.
    id: Mapped[str] = mapped_column(String(24), primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("people.id"), index=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(60), default="")
    #: The rights it carries (a subset of its owner's, checked at each use).
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class SignInFailure(Base):
    """A failed sign-in, counted per account (``person:<id>``) and per address
    (``addr:<ip>``) for throttling; old rows are deleted as they stop counting."""

    __tablename__ = "sign_in_failures"
    __table_args__ = (Index("ix_sign_in_failures_key_at", "key", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime]


class PhoneCheck(Base):
    """A code sent to a phone to prove it is its owner's."""

    __tablename__ = "phone_checks"

    person_id: Mapped[str] = mapped_column(ForeignKey("people.id"), primary_key=True)
    phone: Mapped[str] = mapped_column(String(16))
    code_sha256: Mapped[str] = mapped_column(String(64))
    sent_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(default=0)
    #: Codes sent since ``sends_since`` (at most a few a day: migration 0008).
    sends: Mapped[int] = mapped_column(default=0, server_default="0")
    sends_since: Mapped[datetime | None]


class Presence(Base):
    """One worker's stay: checked in (optionally to a room), then out. Personal data,
    deleted at the end of its own retention."""

    __tablename__ = "presence"

    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("people.id"), index=True)
    room_id: Mapped[str | None] = mapped_column(String(63))
    checked_in_at: Mapped[datetime] = mapped_column(index=True)
    #: None while the worker is present.
    checked_out_at: Mapped[datetime | None] = mapped_column(index=True)
    #: Who checked them in (themselves, or a member of staff).
    in_by: Mapped[str] = mapped_column(String(63))
    out_by: Mapped[str | None] = mapped_column(String(63))


class ViolenceEntry(Base):
    """An incident recorded as third-party violence for the register the wellbeing code
    requires. ``worker_id`` says whose consent decides whether their identity shows."""

    __tablename__ = "violence_entries"

    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), primary_key=True)
    recorded_by: Mapped[str] = mapped_column(String(63))
    recorded_at: Mapped[datetime]
    #: The worker concerned, if known (never shown without their consent).
    worker_id: Mapped[str | None] = mapped_column(ForeignKey("people.id"), index=True)
    #: What happened, in the manager's words (no names unless consented): personal data.
    account: Mapped[str] = mapped_column(Text, default="")


class Consent(Base):
    """A worker's consent to show their identity in the violence register for one
    incident: given at ``given_at``, withdrawn at ``withdrawn_at``."""

    __tablename__ = "consents"
    __table_args__ = (UniqueConstraint("worker_id", "incident_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    worker_id: Mapped[str] = mapped_column(ForeignKey("people.id"), index=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"))
    given_at: Mapped[datetime]
    withdrawn_at: Mapped[datetime | None]


class SiteVersion(Base):
    """One version of the site's configuration (rooms, duty, escalation, staff roles),
    as the site file would say it but without names and numbers (those live in
    ``people``). The newest version is the one in force."""

    __tablename__ = "site_versions"

    version: Mapped[int] = mapped_column(primary_key=True)
    document: Mapped[dict[str, Any]]
    changed_by: Mapped[str] = mapped_column(String(63))
    changed_at: Mapped[datetime]
    #: What changed, in words ("shift added for reception").
    summary: Mapped[str] = mapped_column(String(500), default="")
