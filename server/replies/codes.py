"""Limits on replies: wrong reply codes per phone and per site, and answers to
replies not understood. Kept in memory (a restart forgets them), thread-safe."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

#: "Not understood" replies per number before we stay silent (stops auto-responder loops).
MAX_NOT_UNDERSTOOD = 5
#: Wrong reply codes per number within GUESS_WINDOW before codes from it are refused
#: until the window passes: with 900 codes, a guesser gets 5 tries per 15 minutes.
MAX_WRONG_CODES = 5
GUESS_WINDOW = timedelta(minutes=15)
#: Wrong reply codes from all numbers together within GUESS_WINDOW before no code by
#: SMS is acted on for CODES_PAUSE (a spoofer has every staff number to send from).
MAX_SITE_WRONG_CODES = 10
CODES_PAUSE = timedelta(minutes=15)


class ReplyLimits:
    """Counts wrong codes and replies not understood, per phone number."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._not_understood: dict[str, int] = {}
        #: Times of wrong reply codes per phone (see MAX_WRONG_CODES).
        self._guesses: dict[str, list[datetime]] = {}
        #: Times of wrong reply codes from any phone, and the end of a site-wide pause.
        self._site_guesses: list[datetime] = []
        self._codes_paused: datetime | None = None
        #: (phone, "phone" or "site") -> the end of the lock last explained to that phone.
        self._lock_told: dict[tuple[str, str], datetime] = {}

    def wrong_code(self, phone: str, now: datetime) -> tuple[int, bool]:
        """Count a wrong code from ``phone``; return how many it sent within
        GUESS_WINDOW, and whether this one starts a site-wide pause."""
        with self._lock:
            recent = [t for t in self._guesses.get(phone, []) if t > now - GUESS_WINDOW]
            self._guesses[phone] = [*recent, now]
            site = [*(t for t in self._site_guesses if t > now - GUESS_WINDOW), now]
            paused = len(site) >= MAX_SITE_WRONG_CODES
            self._site_guesses = [] if paused else site
            if paused:
                self._codes_paused = now + CODES_PAUSE
        return len(recent) + 1, paused

    def locked_until(self, phone: str, now: datetime) -> datetime | None:
        """While a phone has sent MAX_WRONG_CODES wrong codes within GUESS_WINDOW, no code
        from it is acted on (a spoofed sender must not try them all); until when."""
        with self._lock:
            recent = [t for t in self._guesses.get(phone, []) if t > now - GUESS_WINDOW]
            self._guesses[phone] = recent
        if len(recent) < MAX_WRONG_CODES:
            return None
        return recent[-MAX_WRONG_CODES] + GUESS_WINDOW

    def paused_until(self, now: datetime) -> datetime | None:
        """The end of the site-wide pause of codes by SMS, or None."""
        with self._lock:
            if self._codes_paused is not None and self._codes_paused <= now:
                self._codes_paused = None
            return self._codes_paused

    def first_told(self, phone: str, key: str, until: datetime) -> bool:
        """True the first time ``phone`` is told of the lock ``key`` ending ``until``."""
        with self._lock:
            told = self._lock_told.get((phone, key)) == until
            self._lock_told[(phone, key)] = until
        return not told

    def not_understood(self, phone: str) -> bool:
        """Count a reply not acted on; True while it may still be answered."""
        with self._lock:
            count = self._not_understood.get(phone, 0) + 1
            self._not_understood[phone] = count
        return count <= MAX_NOT_UNDERSTOOD

    def understood(self, phone: str) -> None:
        with self._lock:
            self._not_understood.pop(phone, None)
