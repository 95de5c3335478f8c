"""A fake Twilio REST API on loopback, for the real ``twilio`` library to talk to.

It checks HTTP basic auth like Twilio, records every Messages and Calls request,
answers with Twilio-shaped JSON, can be told to fail (error code and HTTP status)
for a number, lists what it accepted (``GET Messages.json?To=``, ``GET
Calls.json?To=``), answers a GET of the account (``account_status``), and plays
signed inbound SMS to our webhook like Twilio would.

It enforces Twilio's published limits, with Twilio's error JSON, so that no test
can pass against limits Twilio does not have:

- a message ``Body`` over 1,600 characters, counted in UTF-16 units like Twilio (an
  emoji is two): 400, code 21617;
- inline call ``Twiml`` over 4,000 characters: 400, code 32018;
- ``ValidityPeriod`` outside 1-36,000 seconds: 400, code 90007;
- a per-sender rate (per ``From``, messages and calls apart, as Twilio limits a
  sender's messages a second and an account's calls a second apart): a token
  bucket, :data:`SENDER_RATE` requests a second with bursts of
  :data:`SENDER_BURST`; beyond it 429, code 20429, with ``Retry-After``. Twilio
  itself queues a sender's excess (a long code sends about 1 to 10 segments a
  second) and answers 429 when an account has too many requests in flight;
  refusing here is stricter than Twilio, so a client that copes here copes there.

Its rate and the times it stamps on requests (``at``) are on its ``clock``: the
server's, when a test moves the server's clock by hand, so a 429's wait passes
when the test moves time on.
"""

from __future__ import annotations

import base64
import contextlib
import html
import itertools
import json
import math
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypedDict

import httpx
from twilio.request_validator import RequestValidator

from panicbutton.clock import Clock, SystemClock
from server.settings import SEND_RANGE
from tests import web
from tests.web import PATIENCE

#: Twilio's published limits (twilio.com/docs/api/errors/21617, /32018, /90007).
BODY_LIMIT = 1600
TWIML_LIMIT = 4000
VALIDITY_RANGE = (1, 36000)
#: Default per-sender rate: requests a second per ``From``, and the burst allowed.
SENDER_RATE = 10.0
SENDER_BURST = 20


def _units(text: str) -> int:
    """A length as Twilio counts it: UTF-16 code units (an emoji counts two)."""
    return len(text.encode("utf-16-le")) // 2


def _more_info(code: int) -> str:
    return f"https://www.twilio.com/docs/errors/{code}"


class Pace(TypedDict):
    """The server's pacing settings (:meth:`FakeTwilio.pace`)."""

    twilio_sms_per_second: float
    twilio_calls_per_second: float
    twilio_burst: int


@dataclass
class Refused:
    """One request the fake refused (a limit or an injected failure)."""

    kind: str  # "Messages.json" or "Calls.json"
    to: str
    status: int
    code: int
    params: dict[str, str]
    at: float
    retry_after: int | None = None  # a 429's Retry-After, seconds


@dataclass
class Sent:
    """One Messages.json request as Twilio received it."""

    to: str
    body: str
    params: dict[str, str]
    at: float  # the clock's monotonic() when received
    sid: str = ""
    created: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class Call:
    """One Calls.json request: who is called and the TwiML they would hear."""

    to: str
    twiml: str
    params: dict[str, str]
    at: float
    sid: str = ""
    created: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def spoken(self) -> str:
        return " ".join(re.findall(r"<Say[^>]*>([^<]*)</Say>", self.twiml))

    @property
    def gather_url(self) -> str:
        found = re.search(r'<Gather[^>]*action="([^"]*)"', self.twiml)
        return html.unescape(found.group(1)) if found else ""


@dataclass
class Failure:
    status: int
    code: int
    message: str
    times: int = 1


@dataclass
class FakeTwilio:
    account_sid: str
    auth_token: str
    sent: list[Sent] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    #: Seconds to stall before answering (a slow or hanging Twilio), by number.
    delays: dict[str, float] = field(default_factory=dict)
    failures: dict[str, Failure] = field(default_factory=dict)
    requests: int = 0
    #: Requests refused, by a limit or an injected failure (oldest first).
    refused: list[Refused] = field(default_factory=list)
    #: Per-sender rate (requests a second per From) and burst; rate 0 turns it off.
    sender_rate: float = SENDER_RATE
    sender_burst: int = SENDER_BURST
    #: The clock of the rate and of ``at`` (the server's, if a test moves it).
    clock: Clock = field(default_factory=SystemClock)
    #: What a GET of the account says (``suspended``, ``closed``), and how many were made.
    account_status: str = "active"
    account_reads: int = 0
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeTwilio:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                fake._handle(self)

            def do_GET(self) -> None:
                fake._list(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            # It stops within a poll: a test's teardown waits for it.
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            daemon=True,
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def pace(self) -> Pace:
        """The server's settings for sending as fast as this fake takes (its rate and
        burst; without a rate, as fast as the server may be set to go)."""
        fastest = int(SEND_RANGE["twilio_burst"][1])
        rate = self.sender_rate or fastest
        return Pace(
            twilio_sms_per_second=rate,
            twilio_calls_per_second=rate,
            twilio_burst=self.sender_burst if self.sender_rate else fastest,
        )

    def pace_env(self) -> dict[str, str]:
        """:meth:`pace` as a server process's environment variables."""
        return {f"PANICBUTTON_{k.upper()}": f"{v:g}" for k, v in self.pace().items()}

    def fail(
        self,
        to: str,
        *,
        status: int = 400,
        code: int = 21211,
        message: str = "The 'To' number is not a valid phone number.",
        times: int = 1,
    ) -> None:
        """Make the next ``times`` sends to ``to`` fail like Twilio does."""
        self.failures[to] = Failure(status, code, message, times)

    def _reply(
        self,
        h: BaseHTTPRequestHandler,
        status: int,
        data: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> None:
        raw = json.dumps(data).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(raw)))
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.end_headers()
        # A delayed reply finds its caller gone when the caller's timeout was shorter.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            h.wfile.write(raw)

    def _error(
        self,
        h: BaseHTTPRequestHandler,
        status: int,
        code: int,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Twilio's error JSON."""
        self._reply(
            h,
            status,
            {"code": code, "message": message, "more_info": _more_info(code), "status": status},
            headers,
        )

    def _limit(self, kind: str, params: dict[str, str]) -> tuple[int, int, str] | None:
        """(status, code, message) if Twilio would refuse these parameters for a limit."""
        if kind == "Messages.json":
            body = params.get("Body", "")
            if _units(body) > BODY_LIMIT:
                return (
                    400,
                    21617,
                    f"The concatenated message body exceeds the {BODY_LIMIT} character limit.",
                )
            validity = params.get("ValidityPeriod")
            if validity is not None:
                low, high = VALIDITY_RANGE
                if not validity.isdigit() or not low <= int(validity) <= high:
                    return (400, 90007, f"ValidityPeriod must be between {low} and {high}.")
        elif _units(params.get("Twiml", "")) > TWIML_LIMIT:
            return (400, 32018, f"Twiml must be at most {TWIML_LIMIT} characters.")
        return None

    def _retry_after(self, sender: str) -> int | None:
        """Take a token from the sender's bucket; seconds to wait if there is none."""
        if self.sender_rate <= 0:
            return None
        now = self.clock.monotonic()
        tokens, last = self._buckets.get(sender, (float(self.sender_burst), now))
        tokens = min(float(self.sender_burst), tokens + (now - last) * self.sender_rate)
        if tokens >= 1.0:
            self._buckets[sender] = (tokens - 1.0, now)
            return None
        self._buckets[sender] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) / self.sender_rate))

    def _authorized(self, h: BaseHTTPRequestHandler) -> bool:
        expected = (
            "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        )
        if h.headers.get("Authorization") != expected:
            self._error(h, 401, 20003, "Authenticate")
            return False
        return True

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length", "0"))
        params = dict(urllib.parse.parse_qsl(h.rfile.read(length).decode()))
        if not self._authorized(h):
            return
        base = f"/2010-04-01/Accounts/{self.account_sid}/"
        kind = h.path.removeprefix(base)
        if kind not in ("Messages.json", "Calls.json"):
            self._error(h, 404, 20404, "The requested resource was not found")
            return
        to = params.get("To", "")
        if self.delays.get(to):
            time.sleep(self.delays[to])
        with self._cond:
            self.requests += 1
            sender = f"{kind}:{params.get('From') or params.get('MessagingServiceSid') or ''}"
            failure = self.failures.get(to)
            refusal = self._limit(kind, params)
            wait = None if refusal else self._retry_after(sender)
            if refusal is None and wait is not None:
                refusal = (429, 20429, "Too Many Requests")
            if refusal is None and failure is not None and failure.times > 0:
                failure.times -= 1
                refusal = (failure.status, failure.code, failure.message)
            if refusal is not None:
                status, code, message = refusal
                at = self.clock.monotonic()
                self.refused.append(Refused(kind, to, status, code, params, at, wait))
                self._cond.notify_all()
                headers = {"Retry-After": str(wait)} if wait is not None else None
                self._error(h, status, code, message, headers)
                return
            if kind == "Calls.json":
                call = Call(
                    to=to,
                    twiml=params.get("Twiml", ""),
                    params=params,
                    at=self.clock.monotonic(),
                    sid=f"CA{next(self._ids):032x}",
                )
                self.calls.append(call)
                self._cond.notify_all()
                self._reply(h, 201, self._call_json(call))
                return
            sent = Sent(
                to=to,
                body=params.get("Body", ""),
                params=params,
                at=self.clock.monotonic(),
                sid=f"SM{next(self._ids):032x}",
            )
            self.sent.append(sent)
            self._cond.notify_all()
        self._reply(h, 201, self._message_json(sent))

    def _message_json(self, s: Sent) -> dict[str, Any]:
        return {
            "sid": s.sid,
            "account_sid": self.account_sid,
            "to": s.to,
            "from": s.params.get("From"),
            "body": s.body,
            "status": "queued",
            "num_segments": "1",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "date_created": format_datetime(s.created),
            "date_sent": None,
            "uri": "",
        }

    def _call_json(self, c: Call) -> dict[str, Any]:
        return {
            "sid": c.sid,
            "account_sid": self.account_sid,
            "to": c.to,
            "from": c.params.get("From"),
            "status": "queued",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            # A queued call has no start time yet.
            "date_created": format_datetime(c.created),
            "start_time": None,
            "uri": "",
        }

    def _list(self, h: BaseHTTPRequestHandler) -> None:
        """GET Messages.json?To= or Calls.json?To=: what Twilio accepted for a number,
        newest first (one page of up to 50, as Twilio pages lists); GET of the account."""
        if not self._authorized(h):
            return
        split = urllib.parse.urlsplit(h.path)
        if split.path == f"/2010-04-01/Accounts/{self.account_sid}.json":
            with self._cond:
                self.account_reads += 1
            account = {"sid": self.account_sid, "status": self.account_status, "type": "Full"}
            self._reply(h, 200, account)
            return
        kind = split.path.removeprefix(f"/2010-04-01/Accounts/{self.account_sid}/")
        query = dict(urllib.parse.parse_qsl(split.query))
        to = query.get("To")
        with self._cond:
            if kind == "Messages.json":
                key = "messages"
                items = [self._message_json(s) for s in reversed(self.sent) if s.to == to]
            elif kind == "Calls.json":
                key = "calls"
                items = [self._call_json(c) for c in reversed(self.calls) if c.to == to]
            else:
                self._error(h, 404, 20404, "The requested resource was not found")
                return
        size = int(query.get("PageSize", "50"))
        self._reply(
            h,
            200,
            {
                key: items[:size],
                "next_page_uri": None,
                "page": 0,
                "page_size": size,
                "uri": h.path,
            },
        )

    def wait_for(self, predicate: Callable[[list[Sent]], bool], timeout: float = PATIENCE) -> bool:
        """Wait until ``predicate(sent)`` holds; False on timeout."""
        return self._wait(lambda: predicate(self.sent), timeout)

    def _wait(self, holds: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not holds():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def to(self, phone: str) -> list[str]:
        """Bodies sent to ``phone`` so far."""
        with self._cond:
            return [s.body for s in self.sent if s.to == phone]

    def calls_to(self, phone: str) -> list[Call]:
        with self._cond:
            return [c for c in self.calls if c.to == phone]

    def wait_for_calls(
        self, predicate: Callable[[list[Call]], bool], timeout: float = PATIENCE
    ) -> bool:
        """Wait until ``predicate(calls)`` holds; False on timeout."""
        return self._wait(lambda: predicate(self.calls), timeout)

    def signed_post(
        self,
        url: str,
        params: dict[str, str],
        *,
        public_url: str,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """POST a callback to our server as Twilio would, signed over ``public_url``."""
        signature = RequestValidator(self.auth_token).compute_signature(public_url, params)
        return web.post(
            url,
            data=params,
            headers={"X-Twilio-Signature": signature, **(headers or {})},
            timeout=10,
        )

    def inbound_sms(
        self,
        webhook_url: str,
        *,
        from_: str,
        body: str,
        sid: str | None = None,
        token: str | None = None,
        public_url: str | None = None,
    ) -> httpx.Response:
        """POST an inbound SMS to ``webhook_url`` signed as Twilio signs it.

        ``public_url`` is the URL Twilio believes it called (the signature is
        over it); it defaults to ``webhook_url``.
        """
        params = {
            "From": from_,
            "To": "+32460000000",
            "Body": body,
            "MessageSid": sid or f"SM{next(self._ids):032x}",
            "AccountSid": self.account_sid,
        }
        signature = RequestValidator(token or self.auth_token).compute_signature(
            public_url or webhook_url, params
        )
        return web.post(
            webhook_url, data=params, headers={"X-Twilio-Signature": signature}, timeout=10
        )
