"""The check-in timer on the phone page in Chromium emulating a phone, against the real
check-in routes: start with a note, extend, survive a reload, a wrong PIN, check out,
and the duress PIN showing exactly the normal check-out while staff get an alarm."""

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


def _checkout(page: Page, pin: str) -> None:
    page.get_by_role("button", name="Check out").click()
    for d in pin:
        page.locator(f'#pinpad [data-digit="{d}"]').click()
    page.locator("#pin-ok").click()


def test_checkin_start_extend_wrong_pin_checkout_and_duress_look_the_same(
    console: System, phone: Callable[..., PhonePage]
) -> None:
    worker = phone()
    worker.enrol()
    page = worker.page
    _start(page, note="Hotel X, room 12")
    expect(page.locator("#checkin-left")).to_have_text("59:59", timeout=3000)
    before = page.locator("#checkin-ends").inner_text()
    page.get_by_role("button", name="Extend 30 min").click()
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
    _checkout(page, DURESS)
    expect(page.locator("#checkin-done")).to_be_visible()
    assert page.locator("main").inner_text() == normal
    assert wait_until(lambda: any(i.kind == "duress" for i in console.incidents()), 5)
    page.locator("#checkin-done-ok").click()
    page.reload()
    expect(page.locator("#checkin-idle")).to_be_visible()
    expect(page.locator("#state-text")).to_have_text("Hold the button 2 seconds to call for help.")
