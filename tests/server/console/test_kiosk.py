"""The reception screen in Chromium: signed in as a device account (role kiosk), it shows
a press, lets a person answer it with their name and PIN, opens nothing else, and
reconnects by itself when the server comes back."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from device.indicator import Light
from server.people.kiosk import Pins
from server.people.roles import Role
from tests.harness import System, wait_until
from tests.server.console.conftest import accessible, screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Page

SCREEN = "reception-screen"


def _pins(console: System) -> Pins:
    assert console.server is not None
    services = console.server.services
    return Pins(sessions=services.sessions, clock=services.clock)


def test_a_person_answers_at_the_screen_with_their_pin_and_nothing_else_opens(
    console: System, open_page: Callable[..., Page], tmp_path: Path
) -> None:
    _pins(console).set("reception", "2580")
    room = console.room("unit-1")
    assert wait_until(lambda: room.light is Light.ARMED), room.lights
    screen = open_page(SCREEN, "/console", roles=(Role.KIOSK,))
    # The console's entry sends the screen to its page; no navigation, no sign-out.
    assert screen.url.endswith("/console/kiosk")
    screen.locator("#live-state:not(.lost)").wait_for()
    assert screen.locator("nav").count() == 0
    # Its cookie now outlives a reboot (30 days by default), not the browser session.
    [cookie] = screen.context.cookies()
    assert cookie["expires"] > time.time() + 29 * 24 * 3600

    room.press()
    screen.wait_for_selector("#room-room-1[data-state=received]", timeout=5000)
    assert screen.locator("body.alarm").count() == 1
    screen.get_by_role("link", name="I'm going").click()
    screen.get_by_role("heading", name="Who is going to Room 1?").wait_for()
    accessible(screen)
    screenshot(screen, "kiosk-answer", tmp_path)

    # A wrong PIN: said plainly, nothing acknowledged.
    screen.get_by_label("Your name").select_option(label="Reception")
    screen.get_by_label("Your kiosk PIN").fill("1397")
    screen.get_by_role("button", name="I'm going").click()
    assert "Wrong PIN for this name" in screen.locator("#problem").inner_text()
    [incident] = console.incidents()
    assert incident.state == "open"
    assert room.light is not Light.HELP_COMING

    # The right PIN: the person chosen is going, recorded as coming from this screen.
    screen.get_by_label("Your kiosk PIN").fill("2580")
    screen.get_by_role("button", name="I'm going").click()
    screen.wait_for_selector("#room-room-1[data-state=help_coming]", timeout=5000)
    assert "Help is coming: Reception is going." in screen.locator("#room-room-1").inner_text()
    assert wait_until(lambda: room.light is Light.HELP_COMING), room.lights
    [incident] = console.incidents()
    assert (incident.state, incident.acknowledged_by) == ("acknowledged", "reception")
    [acknowledged] = console.events("incident.acknowledged")
    assert json.loads(acknowledged.body)["data"] == {"staff": "reception", "via": f"kiosk:{SCREEN}"}
    screenshot(screen, "kiosk", tmp_path)

    # The screen's account opens nothing but its screen.
    for path in (
        "/console/board",
        "/console/incidents",
        "/console/kiosk-pin",
        "/api/v1/incidents",
        "/api/v1/me",
    ):
        answer = screen.request.get(console.base_url + path, max_redirects=0)
        assert answer.status == 403, (path, answer.status)


def test_the_screen_says_it_is_not_live_and_reconnects_after_a_server_restart(
    console: System, open_page: Callable[..., Page]
) -> None:
    room = console.room("unit-1")
    assert wait_until(lambda: room.light is Light.ARMED), room.lights
    screen = open_page(SCREEN, "/console/kiosk", roles=(Role.KIOSK,))
    screen.locator("#live-state:not(.lost)").wait_for()

    console.stop_server()
    screen.locator("#live-state.lost").wait_for(timeout=10000)
    assert "Not live" in screen.locator("#live-state").inner_text()
    assert screen.locator("body[data-live=no]").count() == 1

    console.start_server()
    screen.locator("#live-state:not(.lost)").wait_for(timeout=15000)
    room.press()
    screen.wait_for_selector("#room-room-1[data-state=received]", timeout=10000)
    assert screen.url.endswith("/console/kiosk")
