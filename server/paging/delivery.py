"""One attempt to hand a rendered page to the provider: retries, and 429s waited out.

Errors that may pass (provider 5xx, timeouts) are tried again a few times. A
429 is waited out (its ``Retry-After``), not counted as a failed try. Waits
are on the pager's clock, so a test can move them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from panicbutton.clock import Clock
from server.errors import NotifierError
from server.paging.notifier import Notifier
from server.paging.render import Rendered

__all__ = ["CALLBACK_PAGES", "RATE_WAIT_MAX", "REFUSED_CONTENT", "RETRIES", "RETRY_PAUSE", "Sender"]

log = logging.getLogger(__name__)

#: Tries per page for errors that may pass (provider 5xx, 429, timeouts), and the pause
#: between (seconds, times the number of tries so far).
RETRIES = 3
RETRY_PAUSE = 1.0
#: Most seconds one send waits out 429s (each ``Retry-After``) before it counts as failed.
RATE_WAIT_MAX = 60.0
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
        """The provider's id for the SMS or call, or None and the last error."""
        ids = ",".join(map(str, r.page_ids[:CALLBACK_PAGES]))
        callback = self._callback_url(f"/twilio/status?pages={ids}") if r.page_ids else None
        error: NotifierError | None = None
        tries, waited = 0, 0.0
        while tries < RETRIES:
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
                if exc.retry_after is not None and waited < RATE_WAIT_MAX:
                    # Too many requests: Twilio did not process it and says when to come
                    # back. Waiting is not a failed try.
                    pause = min(max(exc.retry_after, 0.1), RATE_WAIT_MAX - waited)
                    log.info(
                        "%s to staff %s: Twilio asks to wait %.1f s", r.channel, r.member.id, pause
                    )
                    waited += pause
                    self._clock.sleep(pause)
                    continue
                tries += 1
                log.warning(
                    "%s to staff %s failed (try %d): %s", r.channel, r.member.id, tries, exc
                )
                if not exc.retryable or tries >= RETRIES:
                    break
                self._clock.sleep(RETRY_PAUSE * tries)
        return None, error

    def send_more(self, r: Rendered) -> None:
        """The further SMS of a bundle, after its first went: the page is sent once
        its first SMS is (that one carries the status callback)."""
        for body in r.more:
            if self.send(Rendered.text(r.member, body))[0] is None:
                log.warning("a further SMS of a bundle to staff %s failed", r.member.id)
