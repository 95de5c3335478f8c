"""The check-in timer on the phone page in Chromium emulating a phone, against the real
check-in routes: start with a note, extend with the PIN (a wrong one moves nothing),
survive a reload, a wrong PIN, check out, and the duress PIN extending and checking out
exactly as the PIN does while staff get an alarm."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from playwright.sync_api import expect

from tests.harness import System, wait_until
from tests.server.mobile.conftest import PhonePage
from tests.server.mobile.kit import DURESS, PIN

if TYPE_CHECKING:
    from playwright.sync_api import Page


def _start(page: Page, minutes: str = "1 hour", note: str = "") -> None:
    page.get_by_role("button", name="Start a check-in").click()
    page.get_by_label(minutes).check()
    if note:
        page.locator("#checkin-note").fill(note)
    page.get_by_role("button", name="Start", exact=True).click()
    expect(page.locator("#checkin-running")).to_be_visible()


def _pin(page: Page, pin: str) -> None:
    for d in pin:
        page.locator(f'#pinpad [data-digit="{d}"]').click()
    page.locator("#pin-ok").click()


def _checkout(page: Page, pin: str) -> None:
    page.get_by_role("button", name="Check out").click()
    expect(page.locator("#pinpad-title")).to_have_text("Your PIN to check out")
    _pin(page, pin)


def _extend(page: Page, pin: str) -> None:
    page.get_by_role("button", name="Extend 30 min").click()
    expect(page.locator("#pinpad-title")).to_have_text("Your PIN to extend by 30 min")
    _pin(page, pin)


def test_checkin_start_extend_wrong_pin_checkout_and_duress_look_the_same(
    console: System, phone: Callable[..., PhonePage]
) -> None:
    worker = phone()
    worker.enrol()
    page = worker.page
    _start(page, note="Hotel X, room 12")
    expect(page.locator("#checkin-left")).to_have_text("59:59", timeout=3000)
    before = page.locator("#checkin-ends").inner_text()
    _extend(page, "1111")
    expect(page.locator("#checkin-problem")).to_have_text("Wrong PIN")
    page.locator("#pin-cancel").click()
    expect(page.locator("#checkin-ends")).to_have_text(before)
    _extend(page, PIN)
    expect(page.locator("#checkin-running")).to_be_visible()
    expect(page.locator("#checkin-ends")).not_to_have_text(before)
    page.reload()
    expect(page.locator("#checkin-running")).to_be_visible()
    _checkout(page, "1111")
    expect(page.locator("#checkin-problem")).to_have_text("Wrong PIN")
    page.locator("#pin-cancel").click()
    _checkout(page, PIN)
    expect(page.locator("#checkin-done")).to_be_visible()
    normal = page.locator("main").inner_text()
    page.locator("#checkin-done-ok").click()
    _start(page)
    before = page.locator("#checkin-ends").inner_text()
    _extend(page, DURESS)
    expect(page.locator("#checkin-running")).to_be_visible()
    expect(page.locator("#checkin-ends")).not_to_have_text(before)
    expect(page.locator("#checkin-problem")).to_be_hidden()
    assert wait_until(lambda: any(i.kind == "duress" for i in console.incidents()))
    _checkout(page, DURESS)
    expect(page.locator("#checkin-done")).to_be_visible()
    assert page.locator("main").inner_text() == normal
    assert [i.kind for i in console.incidents()].count("duress") == 1  # one per session
    page.locator("#checkin-done-ok").click()
    page.reload()
    expect(page.locator("#checkin-idle")).to_be_visible()
    expect(page.locator("#state-text")).to_have_text("Hold the button 2 seconds to call for help.")
