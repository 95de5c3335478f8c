"""The notifier seam: how a text reaches a phone.

:class:`TwilioNotifier` sends through the official ``twilio`` library (its base
URL comes from settings, so tests point it at a local fake Twilio);
:class:`ConsoleNotifier` prints to the terminal for the demo. Phone numbers are
masked in logs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from server.errors import NotifierError
from server.settings import Settings

log = logging.getLogger(__name__)
# The twilio library logs every request at INFO; keep it to warnings.
_QUIET = logging.getLogger(f"{__name__}.twilio_http")
_QUIET.setLevel(logging.WARNING)

#: Seconds a panic SMS may wait in the provider's queue before it expires, so a
#: stale alarm never arrives hours late (Twilio's default is 10 hours).
SMS_VALIDITY = 300


def mask(phone: str) -> str:
    """``+32470123456`` -> ``+32******456``: enough to tell numbers apart in a log."""
    if len(phone) <= 6:
        return "*" * len(phone)
    return phone[:3] + "*" * (len(phone) - 6) + phone[-3:]


class Notifier(Protocol):
    def send_sms(self, to: str, body: str) -> str:
        """Hand one SMS to the provider and return its message id.

        Raises :class:`NotifierError` when the provider refuses or cannot be reached.
        """


class TwilioNotifier:
    """SMS through Twilio's REST API with an explicit HTTP timeout."""

    def __init__(self, settings: Settings) -> None:
        self._from = settings.twilio_from
        # environment={}: TWILIO_REGION / TWILIO_EDGE in the process environment
        # would otherwise rewrite the host we configured.
        self._client = Client(
            settings.twilio_account_sid,
            settings.twilio_auth_token.get_secret_value(),
            http_client=TwilioHttpClient(timeout=settings.twilio_timeout, logger=_QUIET),
            environment={},
        )
        self._client.api.base_url = settings.twilio_api_base_url

    def send_sms(self, to: str, body: str) -> str:
        sender = (
            {"messaging_service_sid": self._from}
            if self._from.startswith("MG")
            else {"from_": self._from}
        )
        try:
            message = self._client.messages.create(
                to=to, body=body, validity_period=SMS_VALIDITY, **sender
            )
        except TwilioRestException as exc:
            raise NotifierError(
                f"Twilio refused the SMS to {mask(to)}: {exc.code} {exc.msg}",
                code=exc.code,
                retryable=exc.status >= 500 or exc.status == 429,
            ) from None
        except (TwilioException, OSError) as exc:
            raise NotifierError(
                f"Twilio could not be reached for {mask(to)}: {type(exc).__name__}", retryable=True
            ) from None
        log.info("SMS to %s handed to Twilio as %s", mask(to), message.sid)
        return str(message.sid)


class ConsoleNotifier:
    """Prints each SMS instead of sending it (demo only).

    ``say`` prints one line; the demo passes its own so lines never interleave.
    """

    def __init__(self, say: Callable[[str], None] | None = None) -> None:
        self._say = say or (lambda line: print(line, flush=True))
        self._count = 0
        self._lock = threading.Lock()

    def send_sms(self, to: str, body: str) -> str:
        with self._lock:
            self._count += 1
            count = self._count
        self._say(f"  [SMS to {to}] {body}")
        return f"SMconsole{count:08d}"
