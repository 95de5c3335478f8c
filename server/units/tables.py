"""The room units' installation tables: one-time enrolment codes and install reports.

Migration ``0015`` creates them. An enrolment holds a new unit's bundle (its config and
secrets) sealed with a key that only its code gives: the server keeps the code's
SHA-256 and the sealed bytes, never the secrets in clear, and forgets both once the
code has expired or was used more than 15 minutes ago (``server.units.enrolment.GRACE``:
a unit whose answer was lost asks again with the same code). An install report is what
a unit said after installing or upgrading (its version and its ``device check``), shown
on the console's units page.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from server.models import Base


class UnitEnrolment(Base):
    """A code that gives a new unit its bundle, until it expires or its grace after the
    first use ends."""

    __tablename__ = "unit_enrolments"

    #: SHA-256 (hex) of the code, as the unit sends it (upper case, no dashes).
    code_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(63), index=True)
    #: AES-GCM nonce (12 bytes) and ciphertext of the bundle's JSON.
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_by: Mapped[str] = mapped_column(String(63))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    #: When the code was first used; None while it waits for its unit.
    redeemed_at: Mapped[datetime | None]


class UnitInstall(Base):
    """One install or upgrade of a unit, as the unit reported it (the newest 20 are kept)."""

    __tablename__ = "unit_installs"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[str] = mapped_column(String(63), index=True)
    at: Mapped[datetime]
    #: ``install``, ``upgrade`` or ``rollback``.
    action: Mapped[str] = mapped_column(String(16))
    version: Mapped[str] = mapped_column(String(64))
    #: ``passed`` or ``failed``: the unit's own ``device check`` after installing.
    result: Mapped[str] = mapped_column(String(8))
    #: The check's lines as the unit printed them (at most 40, each at most 300 characters).
    lines: Mapped[list[str]] = mapped_column(JSON)
