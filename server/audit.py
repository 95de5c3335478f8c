"""Appending to the incident log. Every state change writes its event in the same
transaction; events hold ids and codes only, never names, numbers or free text."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from server.models import AuditEvent


def audit(
    session: Session, *, at: datetime, type: str, incident_id: int | None = None, **data: Any
) -> None:
    """Append one event to the incident log."""
    session.add(AuditEvent(at=at, type=type, incident_id=incident_id, data=data))
