"""One attempt to hand a rendered page to the provider, with retries.

Errors that may pass (provider 5xx, timeouts) are tried again a few times. A
429 is handed back at once, not tried again here: the pager pauses the sender's
whole queue for its ``Retry-After`` (:mod:`server.paging.pacing`). Waits are on
the pager's clock, so a test can move them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from panicbutton.clock import Clock
from server.errors import NotifierError
from server.paging.notifier import Notifier
from server.paging.render import Rendered

__all__ = [
    "CALLBACK_PAGES",
    "RATE_WAIT_MAX",
    "RATE_WAIT_MIN",
    "REFUSED_CONTENT",
    "RETRIES",
    "RETRY_PAUSE",
    "Sender",
]

log = logging.getLogger(__name__)

#: Tries per page for errors that may pass (provider 5xx, timeouts), and the pause
#: between (seconds, times the number of tries so far).
RETRIES = 3
RETRY_PAUSE = 1.0
#: Most seconds one request sits out 429 pauses (each ``Retry-After``) before it counts
#: as failed, and the shortest pause a 429 makes.
RATE_WAIT_MAX = 60.0
RATE_WAIT_MIN = 0.1
#: Page ids a callback URL names (the webhooks read at most this many).
CALLBACK_PAGES = 20
#: Twilio codes that refuse what a request says (its size or content), not whom it is
#: for: 21617/21658 body too long, 21619 no body, 32018 TwiML too long, 11750 TwiML
#: response too large, 12100 TwiML that cannot be parsed.
REFUSED_CONTENT = frozenset({21617, 21658, 21619, 32018, 11750, 12100})


class Sender:
    """Sends rendered pages and texts through the notifier.

    ``callback_url(path)`` gives the public URL for Twilio's status callbacks, or
    None when there is none (the demo).
    """

    def __init__(
        self, *, notifier: Notifier, clock: Clock, callback_url: Callable[[str], str | None]
    ) -> None:
        self._notifier = notifier
        self._clock = clock
        self._callback_url = callback_url

    def send(self, r: Rendered) -> tuple[str | None, NotifierError | None]:
        """The provider's id for the SMS or call, or None and the last error (at once
        for a 429: its ``retry_after`` says how long the sender must wait)."""
        ids = ",".join(map(str, r.page_ids[:CALLBACK_PAGES]))
        callback = self._callback_url(f"/twilio/status?pages={ids}") if r.page_ids else None
        error: NotifierError | None = None
        for tries in range(1, RETRIES + 1):
            try:
                if r.channel == "call":
                    return self._notifier.call(
                        r.member.phone, r.body, status_callback=callback
                    ), None
                return self._notifier.send_sms(
                    r.member.phone, r.body, status_callback=callback
                ), None
            except NotifierError as exc:
                error = exc
                if exc.retry_after is not None:
                    # Too many requests: Twilio did not process it. Not a failed try.
                    return None, exc
                log.warning(
                    "%s to staff %s failed (try %d): %s", r.channel, r.member.id, tries, exc
                )
                if not exc.retryable or tries >= RETRIES:
                    break
                self._clock.sleep(RETRY_PAUSE * tries)
        return None, error
