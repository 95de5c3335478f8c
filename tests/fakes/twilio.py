"""A fake Twilio REST API on loopback, for the real ``twilio`` library to talk to.

It checks HTTP basic auth like Twilio, records every Messages request, answers
with Twilio-shaped JSON, can be told to fail (error code and HTTP status) for a
number, and plays signed inbound SMS to our webhook like Twilio would.
"""

from __future__ import annotations

import base64
import html
import itertools
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from twilio.request_validator import RequestValidator


@dataclass
class Sent:
    """One Messages.json request as Twilio received it."""

    to: str
    body: str
    params: dict[str, str]
    at: float  # time.monotonic() when received
    sid: str = ""


@dataclass
class Call:
    """One Calls.json request: who is called and the TwiML they would hear."""

    to: str
    twiml: str
    params: dict[str, str]
    at: float
    sid: str = ""

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
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

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

    def _reply(self, h: BaseHTTPRequestHandler, status: int, data: dict[str, Any]) -> None:
        raw = json.dumps(data).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(raw)))
        h.end_headers()
        h.wfile.write(raw)

    def _authorized(self, h: BaseHTTPRequestHandler) -> bool:
        expected = (
            "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        )
        if h.headers.get("Authorization") != expected:
            self._reply(h, 401, {"code": 20003, "message": "Authenticate", "status": 401})
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
            self._reply(h, 404, {"code": 20404, "message": "not found", "status": 404})
            return
        to = params.get("To", "")
        if self.delays.get(to):
            time.sleep(self.delays[to])
        with self._cond:
            self.requests += 1
            failure = self.failures.get(to)
            if failure is not None and failure.times > 0:
                failure.times -= 1
                self._cond.notify_all()
                self._reply(
                    h,
                    failure.status,
                    {"code": failure.code, "message": failure.message, "status": failure.status},
                )
                return
            if kind == "Calls.json":
                sid = f"CA{next(self._ids):032x}"
                self.calls.append(
                    Call(
                        to=to,
                        twiml=params.get("Twiml", ""),
                        params=params,
                        at=time.monotonic(),
                        sid=sid,
                    )
                )
                self._cond.notify_all()
                self._reply(
                    h,
                    201,
                    {
                        "sid": sid,
                        "account_sid": self.account_sid,
                        "to": to,
                        "from": params.get("From"),
                        "status": "queued",
                        "direction": "outbound-api",
                        "uri": "",
                    },
                )
                return
            sid = f"SM{next(self._ids):032x}"
            self.sent.append(
                Sent(
                    to=to, body=params.get("Body", ""), params=params, at=time.monotonic(), sid=sid
                )
            )
            self._cond.notify_all()
        self._reply(
            h,
            201,
            {
                "sid": sid,
                "account_sid": self.account_sid,
                "to": to,
                "from": params.get("From"),
                "body": params.get("Body"),
                "status": "queued",
                "num_segments": "1",
                "direction": "outbound-api",
                "api_version": "2010-04-01",
                "date_created": None,
                "uri": "",
            },
        )

    def _list(self, h: BaseHTTPRequestHandler) -> None:
        """GET Messages.json?To=...: what Twilio has sent to a number (newest first)."""
        if not self._authorized(h):
            return
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(h.path).query))
        with self._cond:
            found = [s for s in reversed(self.sent) if s.to == query.get("To")]
        self._reply(
            h,
            200,
            {
                "messages": [
                    {"sid": s.sid, "to": s.to, "body": s.body, "status": "sent"} for s in found
                ],
                "next_page_uri": None,
                "page": 0,
                "page_size": 50,
                "uri": h.path,
            },
        )

    def wait_for(self, predicate: Callable[[list[Sent]], bool], timeout: float = 10.0) -> bool:
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
        self, predicate: Callable[[list[Call]], bool], timeout: float = 10.0
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
        return httpx.post(
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
        return httpx.post(
            webhook_url, data=params, headers={"X-Twilio-Signature": signature}, timeout=10
        )
