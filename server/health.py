"""Whether this server can do its work now (``GET /readyz``): its database answers, it is
connected to the MQTT broker, and Twilio answers to its credentials.

Twilio is asked with a GET of the account: authenticated, it proves the credentials
and the way out to Twilio, sends nothing and costs nothing. The answer is kept for
:data:`TWILIO_EVERY` seconds, so probes every few seconds do not become a stream of
requests to Twilio, nor wait each time on a slow one. The last page's outcome was not
chosen instead: on a quiet night, when it matters most, it says nothing about the next
alarm's page, and it would still say "fine" hours after the auth token was revoked.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Final

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from panicbutton.clock import Clock
from server.errors import NotifierError
from server.paging.notifier import Notifier

__all__ = ["TWILIO_EVERY", "Health", "Readiness"]

#: Seconds an answer from Twilio (good or bad) stands before it is asked again.
TWILIO_EVERY: Final = 30.0
OK: Final = "ok"


#: A Twilio account SID, as it may appear in Twilio's error texts (a request's path).
ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")


@dataclass(frozen=True, slots=True)
class Readiness:
    """Each part: ``"ok"``, or what is wrong with it and what to look at."""

    database: str
    broker: str
    twilio: str

    def failed(self) -> list[str]:
        """The parts that are not ok, in this order: database, broker, twilio."""
        return [f.name for f in fields(self) if getattr(self, f.name) != OK]


class Health:
    """Checks the parts a server needs to take an alarm in and page about it."""

    def __init__(
        self,
        *,
        engine: Engine,
        link_up: Callable[[], bool],
        broker: str,
        notifier: Notifier,
        clock: Clock,
    ) -> None:
        """``link_up()`` says whether the MQTT client is connected; ``broker`` is its
        address (``host:port``), named when it is not."""
        self._engine = engine
        self._link_up = link_up
        self._broker = broker
        self._notifier = notifier
        self._clock = clock
        self._lock = threading.Lock()
        self._twilio: tuple[float, str] | None = None  # (when asked, the answer)
        self._asking = False

    def check(self) -> Readiness:
        """Ask each part now (Twilio: at most every :data:`TWILIO_EVERY` seconds)."""
        return Readiness(database=self._database(), broker=self._mqtt(), twilio=self._provider())

    def _database(self) -> str:
        try:
            with self._engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            # The class only: the error's text may carry the database's address and user.
            return (
                f"the database did not answer SELECT 1 ({type(exc).__name__}): check that it "
                "runs and that PANICBUTTON_DATABASE_URL reaches it"
            )
        return OK

    def _mqtt(self) -> str:
        if self._link_up():
            return OK
        return (
            f"not connected to the MQTT broker at {self._broker}: alarms from room units "
            "cannot reach this server; check that the broker runs (the server reconnects "
            "by itself)"
        )

    def _provider(self) -> str:
        # One probe asks Twilio at a time, outside the lock: the others (and this one,
        # when Twilio is slow) get the last answer at once rather than queue behind it
        # and time out, which would mark a working server unready.
        with self._lock:
            now = self._clock.monotonic()
            due = self._twilio is None or now - self._twilio[0] >= TWILIO_EVERY
            if not due or self._asking:
                return self._twilio[1] if self._twilio is not None else OK
            self._asking = True
        try:
            self._notifier.check()
        except NotifierError as exc:
            # Twilio's text can hold the account's path: never its SID on this page.
            answer = ACCOUNT_SID.sub("AC…", str(exc))
        else:
            answer = OK
        with self._lock:
            self._twilio = (now, answer)
            self._asking = False
        return answer
