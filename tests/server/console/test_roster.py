"""The roster page in Chromium: the week as the pager sees it, a shift edited from the
page changes who a real press pages, and a week with nobody on duty says so in words."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from device.indicator import Light
from tests.harness import FLOOR, MANAGER, RECEPTION, System, wait_until
from tests.server.console.conftest import accessible

if TYPE_CHECKING:
    from playwright.sync_api import Page

#: Reception on duty round the clock by one weekly shift; the manager when nobody is.
ROUND_THE_CLOCK = {
    "on_duty": [],
    "default": ["manager"],
    "shifts": [{"staff": "reception", "start": "00:00", "end": "00:00"}],
}


@pytest.mark.site(duty=ROUND_THE_CLOCK)
def test_a_shift_edited_on_the_roster_page_decides_who_a_press_pages(
    console: System, open_page: Callable[..., Page]
) -> None:
    room = console.room("unit-1")
    assert wait_until(lambda: room.light is Light.ARMED), room.lights
    page = open_page("manager", "/console/roster")
    calendar = page.locator("#calendar tbody")
    assert calendar.locator("tr").count() == 24
    assert calendar.locator("tr").first.locator("td").count() == 7
    assert calendar.locator("td", has_text="Reception").count() == 7 * 24
    assert calendar.locator("td.gap-cell").count() == 0
    # The manager reads the page in French.
    assert "Aucun trou cette semaine" in page.locator("#gap-summary").inner_text()
    accessible(page)

    shift = page.locator("#shift-0")
    shift.get_by_label("Qui").select_option("floor")
    shift.get_by_role("button", name="Enregistrer ce service").click()
    page.wait_for_load_state("load")
    page.locator("#calendar td", has_text="Floor").first.wait_for()
    assert page.locator("#calendar td", has_text="Reception").count() == 0

    room.press()
    assert console.twilio.wait_for(lambda _: any("ALARM" in t for t in console.twilio.to(FLOOR)))
    [incident] = console.incidents()
    assert console.twilio.to(RECEPTION) == []
    assert console.twilio.to(MANAGER) == []
    assert incident.state == "open"

    # Without the shift the week has nobody on duty: each hour says so in words.
    page.on("dialog", lambda dialog: dialog.accept())
    page.locator("#shift-0").get_by_role("button", name="Supprimer ce service").click()
    page.wait_for_load_state("load")
    page.locator("#calendar td.gap-cell").first.wait_for()
    assert page.locator("#calendar td.gap-cell").count() == 7 * 24
    assert "Trou : personne de garde" in page.locator("#calendar td.gap-cell").first.inner_text()
    assert "168" in page.locator("#gap-summary").inner_text()

    # Staff do not edit the roster: the page is refused to them.
    refused = open_page("reception", "/console/roster")
    assert refused.locator("h1").inner_text() == "Not allowed"
    assert "roster" in refused.locator("main").inner_text()

    # Another week, by its ISO number; a malformed one is not found.
    answer = page.goto(console.base_url + "/console/roster?week=2026-W01")
    assert answer is not None
    assert answer.ok
    assert "2026-W01" in page.locator("#week-title").inner_text()
    assert page.locator("#calendar thead th").nth(1).inner_text().startswith("lun. 29 déc.")
    answer = page.goto(console.base_url + "/console/roster?week=2026-53x")
    assert answer is not None
    assert answer.status == 404
