"""The live board in Chromium: a press shows on every open board within a second, is
loud while nobody has taken it, and "I'm going" takes it for the person signed in."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import create_engine, insert, update

from device.indicator import Light
from server.console import live
from server.models import DeviceRecord
from server.people import directory
from server.people.roles import Role
from tests.harness import FLOOR, RECEPTION, System, wait_until
from tests.server.console.conftest import accessible, screenshot
from tests.web import PATIENCE

if TYPE_CHECKING:
    from playwright.sync_api import Page


#: Seconds within which a change shows on an open board in these tests. The board is
#: pushed to (other instances' changes are looked for every ``live.POLL`` s); this
#: bound tells that from a board that waits for a reload or a slow poll, with room
#: for a loaded machine. How fast it really is: ``make bench`` (part "board").
SHOWN = 5.0

#: Notes the moment (ms since the epoch) the board first shows what ``selector`` finds.
WATCH = """selector => {
  window.shownAt = null;
  new MutationObserver((_, observer) => {
    if (document.querySelector(selector)) { window.shownAt = Date.now(); observer.disconnect(); }
  }).observe(document.getElementById("board"), {childList: true, subtree: true});
}"""


def test_press_shows_on_two_boards_within_a_second_and_im_going_takes_it(
    console: System, open_page: Callable[..., Page], tmp_path: Path
) -> None:
    room = console.room("unit-1")
    assert wait_until(lambda: room.light is Light.ARMED), room.lights
    manager = open_page("manager")
    reception = open_page("reception")
    for board in (manager, reception):
        board.locator("#live-state:not(.lost)").wait_for()
        assert board.locator("#room-room-1").get_attribute("data-state") == "armed"

    for board in (manager, reception):
        board.evaluate(WATCH, "#room-room-1[data-state=received]")
    pressed = time.time()
    room.press()
    for board in (manager, reception):
        board.wait_for_selector("#room-room-1[data-state=received]", timeout=PATIENCE * 1000)
        shown = board.evaluate("window.shownAt") / 1000 - pressed
        assert shown < SHOWN, f"the press took {shown:.2f} s to show on a board"

    # Loud: the page flashes, its title and icon say so.
    assert reception.locator("body.alarm").count() == 1
    assert reception.title().startswith("(1) ALARM")
    assert reception.locator("#icon").get_attribute("href") == "/console/static/icon-alarm.svg"
    accessible(reception)
    screenshot(manager, "board-alarm", tmp_path)

    # By keyboard alone: Tab reaches "I'm going" and Enter presses it.
    going = reception.get_by_role("button", name="I'm going")
    for _ in range(30):
        reception.keyboard.press("Tab")
        if going.evaluate("button => document.activeElement === button"):
            break
    else:
        raise AssertionError("Tab never reached the I'm going button")
    reception.keyboard.press("Enter")
    for board in (manager, reception):
        board.wait_for_selector("#room-room-1[data-state=help_coming]", timeout=5000)
    # Each reads the board in their own language (the manager's is French).
    assert "Reception y va" in manager.locator("#room-room-1").inner_text()
    assert "Help is coming: Reception is going." in reception.locator("#room-room-1").inner_text()
    assert reception.locator("body.alarm").count() == 0
    assert not reception.title().startswith("(")
    # The unit's light says help is coming; the other person paged is told who is going.
    assert wait_until(lambda: room.light is Light.HELP_COMING), room.lights
    assert console.twilio.wait_for(
        lambda _: "Reception gaat naar Room 1." in console.twilio.to(FLOOR)
    )
    assert any("You are going to Room 1" in t for t in console.twilio.to(RECEPTION))
    [incident] = console.incidents()
    assert (incident.state, incident.acknowledged_by) == ("acknowledged", "reception")


def test_a_change_made_by_another_server_instance_shows_within_a_second(
    console: System, open_page: Callable[..., Page]
) -> None:
    """Larger sites run several server instances on one database: a board learns of
    another instance's changes from the database (not from this instance's commits)."""
    board = open_page("reception")
    board.locator("#live-state:not(.lost)").wait_for()
    assert board.locator("#room-room-2").get_attribute("data-state") == "offline"
    board.evaluate(WATCH, "#room-room-2[data-state=armed]")
    other = create_engine(console.settings.database_url)  # "another instance"
    try:
        changed = time.time()
        with other.begin() as conn:
            seen = {"online": True, "last_seen": datetime.now(UTC)}
            found = conn.execute(
                update(DeviceRecord).where(DeviceRecord.device_id == "unit-2").values(**seen)
            )
            if not found.rowcount:
                conn.execute(insert(DeviceRecord).values(device_id="unit-2", last_seq=0, **seen))
        board.wait_for_selector("#room-room-2[data-state=armed]", timeout=PATIENCE * 1000)
        shown = board.evaluate("window.shownAt") / 1000 - changed
        assert shown < SHOWN, f"another instance's change took {shown:.2f} s to show"
    finally:
        other.dispose()


def test_an_open_board_stops_when_its_session_ends(
    console: System, open_page: Callable[..., Page], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signed out everywhere (here from another browser), an open board stops at once
    and goes to the sign-in page: nothing more reaches it."""
    monkeypatch.setattr(live, "SESSION_CHECK", 0.5)
    # On a phone: the board fits the screen's width (no sideways scrolling).
    board = open_page("reception", viewport={"width": 390, "height": 844}, is_mobile=True)
    board.locator("#live-state:not(.lost)").wait_for()
    assert board.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    accessible(board)
    other = open_page("reception", "/account")
    csrf = other.locator('input[name="csrf"]').first.get_attribute("value")
    assert csrf
    ended = other.request.post(console.api + "/me/sessions/end", headers={"X-CSRF-Token": csrf})
    assert ended.ok, ended.text()
    board.wait_for_url(console.base_url + "/sign-in", timeout=10_000)

    # A role taken away: the open board reloads, and its page now says "not allowed".
    assert console.server is not None
    services = console.server.services
    kept = open_page("pat", roles=(Role.STAFF, Role.WORKER))
    kept.locator("#live-state:not(.lost)").wait_for()
    with services.sessions.begin() as session:
        directory.revoke(
            session, person_id="pat", role=Role.STAFF, by="manager", now=services.clock.now()
        )
    kept.get_by_role("heading", name="Not allowed").wait_for(timeout=10_000)
