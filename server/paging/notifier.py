"""The notifier seam: how a text reaches a phone.

:class:`TwilioNotifier` sends through the official ``twilio`` library (its base
URL comes from settings, so tests point it at a local fake Twilio);
:class:`ConsoleNotifier` prints to the terminal for the demo. Phone numbers are
masked in logs.
"""

from __future__ import annotations

import html
import logging
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Protocol

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from server.errors import NotifierError
from server.settings import Settings

log = logging.getLogger(__name__)
# The twilio library logs every request at INFO; keep it to warnings.
_QUIET = logging.getLogger(f"{__name__}.twilio_http")
_QUIET.setLevel(logging.WARNING)


def mask(phone: str) -> str:
    """``+32470123456`` -> ``+32******456``: enough to tell numbers apart in a log."""
    if len(phone) <= 6:
        return "*" * len(phone)
    return phone[:3] + "*" * (len(phone) - 6) + phone[-3:]


_NUMBER = re.compile(r"\+?\d[\d ()-]{6,18}\d")


def mask_numbers(text: str) -> str:
    """Mask every phone number in ``text`` (Twilio's error texts quote them)."""
    return _NUMBER.sub(lambda m: mask(re.sub(r"[^\d+]", "", m.group())), text)


class Notifier(Protocol):
    """How a page reaches a phone. Each call raises :class:`NotifierError` when the
    provider refuses or cannot be reached."""

    def send_sms(self, to: str, body: str, *, status_callback: str | None = None) -> str:
        """Hand one SMS to the provider; return its message id."""

    def call(self, to: str, twiml: str, *, status_callback: str | None = None) -> str:
        """Place a voice call that runs ``twiml``; return the call's id."""

    def find_sms(self, to: str, body: str, since: datetime) -> str | None:
        """The id of an SMS with this body already sent to ``to`` since ``since``, if any
        (to tell after a crash whether a half-sent page went out)."""

    def find_call(
        self, to: str, since: datetime, *, exclude: frozenset[str] = frozenset()
    ) -> str | None:
        """The id of the newest call to ``to`` created since ``since`` and not in
        ``exclude``, if any (calls have no key of ours to look them up by: after a
        crash, a call placed since the page was claimed is taken as that page's)."""

    def check(self) -> None:
        """Ask the provider, without sending anything, whether it can be reached with our
        credentials; :class:`NotifierError` saying what is wrong if not (``/readyz``)."""


class _HttpClient(TwilioHttpClient):  # type: ignore[misc]  # twilio ships no type hints
    """twilio's HTTP client, keeping a 429's ``Retry-After`` for the thread that got it
    (the library's exception does not carry response headers)."""

    def __init__(self, timeout: float) -> None:
        super().__init__(timeout=timeout, logger=_QUIET)
        self._local = threading.local()

    def request(self, *args: Any, **kwargs: Any) -> Response:
        self._local.retry_after = None
        response = super().request(*args, **kwargs)
        if response.status_code == 429:
            self._local.retry_after = _seconds((response.headers or {}).get("Retry-After"))
        return response

    def retry_after(self) -> float | None:
        return getattr(self._local, "retry_after", None)


def _seconds(value: str | None) -> float | None:
    """A ``Retry-After`` in seconds (RFC 9110 also allows an HTTP date; Twilio sends
    seconds): None if absent or unreadable."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class TwilioNotifier:
    """SMS and voice calls through Twilio's REST API, with an explicit HTTP timeout.

    The sync client runs on the pager's worker threads, never on the event loop.
    """

    def __init__(self, settings: Settings) -> None:
        self._from = settings.twilio_from
        self._validity = settings.sms_validity
        self._voice_from = settings.twilio_voice_from or (
            settings.twilio_from if settings.twilio_from.startswith("+") else ""
        )
        # environment={}: TWILIO_REGION / TWILIO_EDGE in the process environment
        # would otherwise rewrite the host we configured.
        self._http = _HttpClient(settings.twilio_timeout)
        self._client = Client(
            settings.twilio_account_sid,
            settings.twilio_auth_token.get_secret_value(),
            http_client=self._http,
            environment={},
        )
        self._client.api.base_url = settings.twilio_api_base_url
        self._account_sid = settings.twilio_account_sid

    def send_sms(self, to: str, body: str, *, status_callback: str | None = None) -> str:
        sender = (
            {"messaging_service_sid": self._from}
            if self._from.startswith("MG")
            else {"from_": self._from}
        )
        extra = {"status_callback": status_callback} if status_callback else {}
        with self._translated(f"SMS to {mask(to)}"):
            message = self._client.messages.create(
                to=to, body=body, validity_period=self._validity, **sender, **extra
            )
        log.info("SMS to %s handed to Twilio as %s", mask(to), message.sid)
        return str(message.sid)

    def call(self, to: str, twiml: str, *, status_callback: str | None = None) -> str:
        if not self._voice_from:
            raise NotifierError(
                "no caller number: set PANICBUTTON_TWILIO_VOICE_FROM (a Twilio "
                "number; a Messaging Service cannot place calls)",
                code=21212,
            )
        extra = (
            {
                "status_callback": status_callback,
                "status_callback_event": ["initiated", "ringing", "answered", "completed"],
            }
            if status_callback
            else {}
        )
        with self._translated(f"call to {mask(to)}"):
            # timeout: ring for 25 s, then Twilio reports no-answer (a voicemail may
            # still pick up: "completed" is never taken as acknowledged).
            placed = self._client.calls.create(
                to=to, from_=self._voice_from, twiml=twiml, timeout=25, **extra
            )
        log.info("call to %s handed to Twilio as %s", mask(to), placed.sid)
        return str(placed.sid)

    def find_sms(self, to: str, body: str, since: datetime) -> str | None:
        # date_sent_after is day-grained at Twilio and a queued message has no sent date:
        # filter on the creation time here, and when unsure, report "not found" (a
        # second page is better than a lost one).
        with self._translated(f"message list to {mask(to)}"):
            for message in self._client.messages.list(to=to, date_sent_after=since, limit=50):
                created = message.date_created
                if message.body == body and created is not None and created >= since:
                    return str(message.sid)
        return None

    def find_call(
        self, to: str, since: datetime, *, exclude: frozenset[str] = frozenset()
    ) -> str | None:
        # A queued call has no start time yet: filter on the creation time here
        # (start_time_after would miss it), newest first as Twilio lists them.
        with self._translated(f"call list to {mask(to)}"):
            for placed in self._client.calls.list(to=to, limit=50):
                created = placed.date_created
                if created is not None and created >= since and placed.sid not in exclude:
                    return str(placed.sid)
        return None

    def check(self) -> None:
        # GET of the account: authenticated, sends nothing, costs nothing.
        with self._translated("account"):
            account = self._client.api.v2010.accounts(self._account_sid).fetch()
        if account.status != "active":
            raise NotifierError(
                f"the Twilio account is {account.status}, not active: nothing can be sent "
                "until it is (see the Twilio console)"
            )

    @contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        """Turn twilio's and the network's errors into :class:`NotifierError`."""
        try:
            yield
        except TwilioRestException as exc:
            raise NotifierError(
                f"Twilio refused the {what}: {exc.code} {mask_numbers(str(exc.msg))}",
                code=exc.code,
                retryable=exc.status >= 500 or exc.status == 429,
                retry_after=self._http.retry_after() if exc.status == 429 else None,
            ) from None
        except (TwilioException, OSError) as exc:
            raise NotifierError(
                f"Twilio could not be reached for the {what}: {type(exc).__name__}",
                retryable=True,
            ) from None


class ConsoleNotifier:
    """Prints each SMS and call instead of sending it (demo only).

    ``say`` prints one line; the demo passes its own so lines never interleave.
    """

    def __init__(self, say: Callable[[str], None] | None = None) -> None:
        self._say = say or (lambda line: print(line, flush=True))
        self._count = 0
        self._lock = threading.Lock()

    def _next(self) -> int:
        with self._lock:
            self._count += 1
            return self._count

    def send_sms(self, to: str, body: str, *, status_callback: str | None = None) -> str:
        count = self._next()
        self._say(f"  [SMS to {to}] {body}")
        return f"SMconsole{count:08d}"

    def call(self, to: str, twiml: str, *, status_callback: str | None = None) -> str:
        count = self._next()
        spoken = " ".join(re.findall(r"<Say[^>]*>([^<]*)</Say>", twiml)[:1])
        self._say(f"  [CALL to {to}] {html.unescape(spoken)}")
        return f"CAconsole{count:08d}"

    def find_sms(self, to: str, body: str, since: datetime) -> str | None:
        return None

    def find_call(
        self, to: str, since: datetime, *, exclude: frozenset[str] = frozenset()
    ) -> str | None:
        return None

    def check(self) -> None:
        """Nothing to reach: the lines are printed here."""
