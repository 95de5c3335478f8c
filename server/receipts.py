"""Receipts of webhooks and used links: a provider's retry or a replayed request
is recognised and not acted on twice."""

from __future__ import annotations

from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.clock import Clock
from server.models import WebhookReceipt


class Receipts:
    """One row per handled request, keyed by what the provider signed (at most 96 chars)."""

    def __init__(self, *, sessions: sessionmaker[Session], clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock

    def seen(self, key: str) -> bool:
        """Record a webhook's provider id; True if it was handled before (a replay)."""
        try:
            with self._sessions.begin() as s:
                s.execute(insert(WebhookReceipt).values(key=key[:96], at=self._clock.now()))
        except IntegrityError:
            return True
        return False

    def forget(self, key: str) -> None:
        """Handling failed: drop the receipt, so the provider's retry is acted on."""
        with self._sessions.begin() as s:
            s.execute(delete(WebhookReceipt).where(WebhookReceipt.key == key[:96]))
