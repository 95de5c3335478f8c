"""Press -> the live board in a browser, against its floor.

App: a room unit's mock button is pressed; the time is taken when the console's
board, open in headless Chromium (Debian's, driven by Playwright) and signed in
as the manager, first shows the room as ``received`` (a MutationObserver in the
page notes ``Date.now()``; the bench notes ``time.time()`` just before the
press: one clock). Each incident is resolved before the next press.

Floor: the same hops with no application logic: paho publishes an alert (QoS 1)
-> the same Mosquitto -> a paho subscriber in the bench -> a bare Starlette app
(sse-starlette, uvicorn) sends it as one Server-Sent Event -> a page in the same
Chromium puts it in its DOM. The server is stopped for the floor (it would take
the alert).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from demo.broker import free_port
from device.indicator import Light
from panicbutton.wire import QOS, Alert, alert_topic, new_alert_id, now_utc
from server.people import auth
from server.people.roles import Role
from server.units.broker import SERVER_USER
from tests.bench.floor import close, connect, subscribe
from tests.bench.latency import GAP, TIMEOUT, resolve_latest, shows
from tests.harness import MONITOR, System, open_person, wait_until

CHROMIUM = "/usr/bin/chromium"
AGENT = "panicbutton-bench"
#: Notes when the page first shows what ``selector`` finds (ms since the epoch).
WATCH = """selector => {
  window.shownAt = null;
  new MutationObserver((_, observer) => {
    if (document.querySelector(selector)) { window.shownAt = Date.now(); observer.disconnect(); }
  }).observe(document.getElementById("board"), {childList: true, subtree: true});
}"""


@dataclass
class BoardRun:
    app: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    warmup: int = 0


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def _shown(page: Any, selector: str, pressed: float) -> float:
    page.wait_for_selector(selector, timeout=TIMEOUT * 1000)
    shown_at: float = page.evaluate("window.shownAt")
    return shown_at / 1000 - pressed


def measure_board_app(
    system: System,
    browser: Any,
    presses: int,
    run: BoardRun,
    *,
    progress: Callable[[str], None] | None = None,
) -> None:
    """The app figure: ``run.warmup`` presses not counted, then ``presses``."""
    assert system.server is not None
    services = system.server.services
    open_person(services, "manager", roles=(Role.MANAGER, Role.STAFF))
    with services.sessions.begin() as session:
        cookie = auth.start_session(
            session, person_id="manager", agent=AGENT, method="bench", now=services.clock.now()
        )
    context = browser.new_context(user_agent=AGENT)
    context.add_cookies(
        [{"name": auth.DEMO_SESSION_COOKIE, "value": cookie, "url": system.base_url}]
    )
    room = system.room("unit-1")
    if not wait_until(shows(room, Light.ARMED), TIMEOUT):
        raise TimeoutError("bench: unit-1 did not arm")
    page = context.new_page()
    page.goto(system.base_url + "/console/board")
    # Armed, or resolved a moment ago by the press -> SMS section.
    page.wait_for_selector("#room-room-1:not([data-state=offline])", timeout=TIMEOUT * 1000)
    try:
        for i in range(run.warmup + presses):
            page.evaluate(WATCH, "#room-room-1[data-state=received]")
            pressed = time.time()
            room.press()
            took = _shown(page, "#room-room-1[data-state=received]", pressed)
            if i >= run.warmup:
                run.app.append(took)
            resolve_latest(system)
            page.wait_for_selector("#room-room-1[data-state=resolved]", timeout=TIMEOUT * 1000)
            time.sleep(GAP)
            if progress is not None and (i + 1) % 25 == 0:
                progress(f"board: {i + 1}/{run.warmup + presses} presses")
    finally:
        context.close()
        room.agent.close()
        system.rooms.remove(room)


class _Floor:
    """A bare SSE app: each message put in ``send`` goes to every open page."""

    PAGE = (
        '<!doctype html><html><head><script src="/floor.js" defer></script></head>'
        '<body><div id="board"></div></body></html>'
    )
    SCRIPT = (
        'new EventSource("/events").addEventListener("board", e => {'
        'document.getElementById("board").innerHTML = e.data; });'
    )

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.queues: list[asyncio.Queue[str]] = []
        self.app = Starlette(
            routes=[
                Route("/", lambda _: HTMLResponse(self.PAGE)),
                Route("/floor.js", lambda _: Response(self.SCRIPT, media_type="text/javascript")),
                Route("/events", self.events),
            ]
        )

    async def events(self, _request: Request) -> Response:
        self.loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str] = asyncio.Queue()
        self.queues.append(queue)

        async def stream() -> AsyncIterator[dict[str, str]]:
            while True:
                yield {"event": "board", "data": await queue.get()}

        return EventSourceResponse(stream())

    def send(self, text: str) -> None:
        loop = self.loop
        assert loop is not None
        for queue in self.queues:
            loop.call_soon_threadsafe(queue.put_nowait, text)


def measure_board_floor(system: System, browser: Any, presses: int, run: BoardRun) -> None:
    """The floor figure (the server must be stopped)."""
    floor = _Floor()
    port = free_port()
    web = uvicorn.Server(uvicorn.Config(floor.app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    if not wait_until(lambda: web.started, TIMEOUT):
        raise TimeoutError("bench: the floor's web server did not start")
    device = "unit-3"
    sub = connect("bench-board-sub", MONITOR, system.users[MONITOR], system.mqtt_port)
    pub = connect("bench-board-pub", device, system.users[device], system.mqtt_port)
    context = browser.new_context()
    try:
        sub.on_message = lambda c, u, msg: floor.send(
            f'<p id="room" data-state="received">{len(msg.payload)}</p>'
        )
        subscribe(sub, alert_topic(device))
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        if not wait_until(lambda: floor.queues, TIMEOUT):
            raise TimeoutError("bench: the floor page did not open its event stream")
        for i in range(run.warmup + presses):
            page.evaluate("document.getElementById('board').replaceChildren()")
            page.evaluate(WATCH, "#room[data-state=received]")
            payload = Alert(
                device_id=device, alert_id=new_alert_id(), seq=i + 1, pressed_at=now_utc()
            ).to_json()
            pressed = time.time()
            pub.publish(alert_topic(device), payload, qos=QOS)
            took = _shown(page, "#room[data-state=received]", pressed)
            if i >= run.warmup:
                run.floor.append(took)
            time.sleep(GAP)
    finally:
        context.close()
        close(pub)
        close(sub)
        close(
            connect("drop-queued-board", SERVER_USER, system.users[SERVER_USER], system.mqtt_port)
        )
        web.should_exit = True
        thread.join(timeout=10)
