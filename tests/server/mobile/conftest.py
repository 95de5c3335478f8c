"""The mobile button's tests: ``site`` and ``client`` (the server on a hand-moved clock
with the fake Twilio, and an HTTP client on its app), and the phone's page in a real
browser: Debian's Chromium emulating a phone (390 by 844, touch, the geolocation
permission and a position set by the test), against the whole system (the console's
``console`` fixture: real Mosquitto, the fake Twilio, the server on loopback, where
http://127.0.0.1 is a secure context).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient

from server.mobile.tables import MobilePhone
from server.people.roles import Role
from tests.harness import System

# The whole system the console's browser tests run against, reused as it is.
from tests.server.console.conftest import console as console  # noqa: PLC0414  # re-exported fixture
from tests.server.mobile.kit import DURESS, PIN, phone_link
from tests.server.people_helpers import BASE_URL, Served, add_person, served

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Geolocation, Page


@pytest.fixture
def site(database_url: str, tmp_path: Path) -> Iterator[Served]:
    """The server (sample site, no MQTT) on a hand-moved clock, paging the fake Twilio;
    a test module that needs settings of its own defines its own ``site``."""
    with served(database_url, tmp_path) as running:
        yield running


@pytest.fixture
def client(site: Served) -> Iterator[TestClient]:
    """An HTTP client on the server's app, as a phone or Twilio would call it."""
    with TestClient(site.server.app, base_url=BASE_URL) as c:
        yield c


#: Where the emulated phone is (Brussels), and its own number.
WHERE: Geolocation = {"latitude": 50.8466, "longitude": 4.3528, "accuracy": 12}
NUMBER = "+32470555001"


@dataclass
class PhonePage:
    """A worker's phone in the browser: its context (offline, geolocation) and page."""

    system: System
    context: BrowserContext
    page: Page
    #: Errors the page's scripts threw (none is allowed).
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    @property
    def url(self) -> str:
        return self.system.base_url + "/phone"

    def enrol(self, worker: str = "w-17", *, language: str = "en") -> str:
        """Open ``worker``'s account, open a manager's link on the phone and set it up
        as a worker would; the phone's id."""
        server = self.system.server
        assert server is not None
        add_person(server, worker, Role.WORKER, language=language)
        token = phone_link(server, worker)
        page = self.page
        page.goto(f"{self.url}/enrol#{token}")
        page.locator("#number").fill(NUMBER)
        page.locator("#pin").fill(PIN)
        page.locator("#duress").fill(DURESS)
        page.locator("#enrol-submit").click()
        page.locator("#install-done").click()
        page.locator("#sos").wait_for()
        with server.services.sessions() as s:
            phone = s.query(MobilePhone).filter_by(person_id=worker).one()
            return phone.id

    def hold(self, *, key: str | None = None) -> None:
        """Hold the button down until the page takes the alarm (its fill is full): with a
        finger, or with ``key`` on the keyboard."""
        if key is not None:
            self.page.locator("#sos").focus()
            self.page.keyboard.down(key)
            self.page.locator("#sos.held").wait_for()
            self.page.keyboard.up(key)
            return
        box = self.page.locator("#sos").bounding_box()
        assert box is not None
        self.page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        self.page.mouse.down()
        self.page.locator("#sos.held").wait_for()
        self.page.mouse.up()

    def state(self) -> str:
        return self.page.locator("#state-text").inner_text()


@pytest.fixture
def phone(
    chromium: Browser, console: System
) -> Iterator[Callable[..., PhonePage]]:  # the fixture imported above
    """``phone(**context)``: a new phone (a browser context emulating one) at ``/phone``."""
    contexts: list[BrowserContext] = []
    phones: list[PhonePage] = []

    def opened(**context: Any) -> PhonePage:
        ctx = chromium.new_context(
            viewport={"width": 390, "height": 844},
            is_mobile=True,
            has_touch=True,
            permissions=["geolocation"],
            geolocation=WHERE,
            locale="en-GB",
            **context,
        )
        contexts.append(ctx)
        phones.append(PhonePage(system=console, context=ctx, page=ctx.new_page()))
        return phones[-1]

    try:
        yield opened
    finally:
        for ctx in contexts:
            ctx.close()
    thrown = [error for p in phones for error in p.errors]
    assert not thrown, f"the page's scripts threw: {thrown}"
