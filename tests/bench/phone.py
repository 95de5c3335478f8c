"""The phone button: alarm -> first SMS request, against its floor.

App: a worker's phone (a P-256 key signing like the page, :mod:`tests.server.mobile.kit`)
POSTs a signed alarm over HTTP on loopback to the running server (uvicorn, as in
production); the time runs from ``time.monotonic()`` just before the request is
signed to the fake Twilio's receipt of the incident's first Messages request
(``Sent.at``, same process, same clock). Each incident is resolved before the next.

Floor: the same hops with no application logic: the same HTTP client POSTs the same
body to a bare Starlette app under uvicorn, whose handler sends one Messages request
with the twilio library's HTTP client to the same fake Twilio.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from twilio.http.http_client import TwilioHttpClient

from demo.broker import free_port
from panicbutton.wire import new_alert_id, now_utc
from server.people.roles import Role
from tests.bench.latency import GAP, TIMEOUT, at_least, resolve_latest
from tests.harness import RECEPTION, System
from tests.server.mobile.kit import Phone, phone_link
from tests.server.people_helpers import add_person


@dataclass
class PhoneRun:
    app: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    warmup: int = 3


def measure_phone_app(
    system: System,
    presses: int,
    run: PhoneRun,
    *,
    progress: Callable[[str], None] | None = None,
) -> None:
    """``run.warmup`` alarms not counted, then ``presses`` alarms from one phone."""
    assert system.server is not None
    twilio = system.twilio
    add_person(system.server, "w-bench", Role.WORKER)
    with httpx.Client(base_url=system.base_url, timeout=TIMEOUT) as client:
        phone = Phone(client)
        answer = phone.enrol(phone_link(system.server, "w-bench"))
        if answer.status_code != 201:
            raise RuntimeError(f"bench: the phone could not enrol: {answer.text}")
        for i in range(run.warmup + presses):
            before = len(twilio.sent)
            at = time.monotonic()
            answer = phone.alarm()
            if answer.status_code != 200:
                raise RuntimeError(f"bench: alarm {i + 1} answered {answer.status_code}")
            if not twilio.wait_for(at_least(before + 1), TIMEOUT):
                raise TimeoutError(f"bench: phone alarm {i + 1} paged nobody")
            if i >= run.warmup:
                run.app.append(twilio.sent[before].at - at)
            resolve_latest(system)
            time.sleep(GAP)
            if progress is not None and (i + 1) % 50 == 0:
                progress(f"phone: {i + 1}/{run.warmup + presses} alarms")


@contextlib.contextmanager
def _bare_app(handle: Callable[[], None]) -> Iterator[str]:
    async def alarm(request: Request) -> Response:
        await request.body()
        handle()  # in the event loop, as simple as it gets: one blocking POST
        return Response(json.dumps({"state": "received"}), media_type="application/json")

    app = Starlette(routes=[Route("/api/v1/phone/alarms", alarm, methods=["POST"])])
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while not server.started:
        if time.monotonic() > deadline:
            raise TimeoutError("bench: the floor's HTTP server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def measure_phone_floor(system: System, presses: int, run: PhoneRun) -> None:
    """The same hops with no logic: HTTP POST -> bare handler -> twilio HTTP client."""
    twilio = system.twilio
    url = f"{twilio.base_url}/2010-04-01/Accounts/{twilio.account_sid}/Messages.json"
    http = TwilioHttpClient(timeout=10)
    form = {
        "To": RECEPTION,
        "From": system.settings.twilio_from,
        "ValidityPeriod": "300",
        "Body": "ALARM w-bench (mobile) at 12:00. Reply 1 if you are going.",
    }

    def handle() -> None:
        http.request("POST", url, data=dict(form), auth=(twilio.account_sid, twilio.auth_token))

    body = json.dumps(
        {"alert_id": new_alert_id(), "pressed_at": now_utc().isoformat(), "presses": 1}
    ).encode()
    with _bare_app(handle) as base, httpx.Client(base_url=base, timeout=TIMEOUT) as client:
        for i in range(run.warmup + presses):
            before = len(twilio.sent)
            at = time.monotonic()
            client.post(
                "/api/v1/phone/alarms",
                content=body,
                headers={"Content-Type": "application/json"},
            )
            if not twilio.wait_for(at_least(before + 1), TIMEOUT):
                raise TimeoutError(f"bench: floor request {i + 1} did not reach fake Twilio")
            if i >= run.warmup:
                run.floor.append(twilio.sent[before].at - at)
            time.sleep(GAP)
