"""The roster page in Chromium: the week as the pager sees it, a shift edited from the
page changes who a real press pages, and a week with nobody on duty says so in words."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from fastapi import HTTPException

from device.indicator import Light
from server.console.roster import calendar, week_of
from server.duty import Takeover
from server.people import presence
from server.people.roles import Role
from tests.harness import (
    FLOOR,
    MANAGER,
    RECEPTION,
    System,
    open_person,
    sample_site,
    wait_until,
)
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
    with page.expect_navigation():  # the page is read again
        shift.get_by_role("button", name="Enregistrer ce service").click()
    page.locator("#calendar td", has_text="Floor").first.wait_for()
    assert page.locator("#calendar td", has_text="Reception").count() == 0

    # The escalation plan and a room's label, from the same page.
    page.get_by_label("Étape 2 : après (secondes)").fill("45")
    page.locator("#escalation tr.step").nth(1).get_by_label("appel").uncheck()
    with page.expect_navigation():
        page.get_by_role("button", name="Enregistrer le plan d'escalade").click()
    page.get_by_label("Étape 2 : après (secondes)").wait_for()
    assert page.get_by_label("Étape 2 : après (secondes)").input_value() == "45"
    page.get_by_label("Nom de la pièce room-1").fill("Kamer Eén")
    with page.expect_navigation():
        page.get_by_role("button", name="Enregistrer le nom").first.click()
    page.get_by_label("Nom de la pièce room-1").wait_for()
    document = page.request.get(console.base_url + "/api/v1/site").json()["document"]
    assert document["escalation"]["steps"][1] == {
        "after": 45,
        "who": "all_staff",
        "channels": ["sms"],
    }
    assert document["rooms"][0]["label"] == "Kamer Eén"
    assert document["rooms"][0]["device"] == "unit-1"

    room.press()
    paged = console.twilio.wait_for
    assert paged(lambda _: any("Kamer Eén" in t for t in console.twilio.to(FLOOR)))
    [incident] = console.incidents()
    assert console.twilio.to(RECEPTION) == []
    assert console.twilio.to(MANAGER) == []
    assert incident.state == "open"

    # Without the shift the week has nobody on duty: each hour says so in words.
    page.on("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.locator("#shift-0").get_by_role("button", name="Supprimer ce service").click()
    page.locator("#calendar td.gap-cell").first.wait_for()
    assert page.locator("#calendar td.gap-cell").count() == 7 * 24
    assert "Trou : personne de garde" in page.locator("#calendar td.gap-cell").first.inner_text()
    assert "168" in page.locator("#gap-summary").inner_text()
    assert page.locator("#gap-now").count() == 0  # nobody is here: no one needs a reference
    assert console.server is not None
    services = console.server.services
    open_person(services, "w-1", roles=(Role.WORKER,))
    with services.sessions.begin() as s:
        presence.check_in(
            s, person_id="w-1", by="manager", now=services.clock.now(), site=services.site
        )
    page.reload()
    assert "des travailleurs sont là (1)" in page.locator("#gap-now").inner_text()
    accessible(page)

    # A new shift from the page: Floor on Mondays, 07:00 to 17:00.
    new = page.locator("#new-shift")
    new.get_by_label("Qui").select_option("floor")
    for day in ("mar.", "mer.", "jeu.", "ven.", "sam.", "dim."):
        new.get_by_label(day).uncheck()
    new.get_by_label("Début", exact=True).fill("07:00")
    new.get_by_label("Fin").fill("17:00")
    with page.expect_navigation():
        new.get_by_role("button", name="Ajouter le service").click()
    page.locator("#shift-0").wait_for()
    assert page.locator("#calendar td.gap-cell").count() == 7 * 24 - 10
    monday = page.locator("#calendar tbody tr td:first-of-type")
    assert "Floor" not in monday.nth(6).inner_text()
    assert "Floor" in monday.nth(7).inner_text()
    assert "Trou" not in monday.nth(7).inner_text()
    assert "Floor" in monday.nth(16).inner_text()
    assert "Trou" in monday.nth(17).inner_text()

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
    # So is one before 2000 or after 2100 (no date overflow, no reading every take-over
    # since 1970); the first and last years' weeks are shown.
    for week, status in {
        "2026-53x": 404,
        "0001-W01": 404,
        "9999-W52": 404,
        "1970-W01": 404,
        "1999-W52": 404,
        "2101-W01": 404,
        "2000-W01": 200,
        "2100-W52": 200,
    }.items():
        answer = page.goto(console.base_url + f"/console/roster?week={week}")
        assert answer is not None
        assert answer.status == status, week


def test_the_week_shows_shifts_take_overs_and_gaps_to_the_minute() -> None:
    site = sample_site(
        duty={
            "on_duty": [],
            "default": ["manager"],
            "shifts": [
                {"staff": "reception", "days": ["mon"], "start": "08:30", "end": "18:00"},
                {"staff": "floor", "days": ["sun"], "start": "22:00", "end": "06:00"},
            ],
        }
    )
    # Tuesday 1 December 2026, 11:30 in Brussels; Floor takes over for two hours.
    now = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
    week = week_of(None, date(2026, 12, 1))
    assert week.label == "2026-W49"
    assert (week.before, week.after) == ("2026-W48", "2026-W50")
    hours = calendar(site, [Takeover("floor", now, now + timedelta(hours=2))], week, now)
    monday, tuesday, sunday = 0, 1, 6
    # Monday 08:00-09:00: nobody until 08:30, then Reception: a gap, and who.
    assert (hours[8][monday].names, hours[8][monday].gap) == (["Reception"], True)
    assert (hours[9][monday].names, hours[9][monday].gap) == (["Reception"], False)
    assert hours[18][monday].gap
    # Tuesday 11:00-12:00: a gap until the take-over at 11:30, the hour of "now".
    cell = hours[11][tuesday]
    assert (cell.names, cell.gap, cell.takeover, cell.now) == (["Floor"], True, True, True)
    assert (hours[12][tuesday].gap, hours[12][tuesday].takeover) == (False, True)
    assert (hours[13][tuesday].names, hours[13][tuesday].gap) == (["Floor"], True)  # to 13:30
    assert (hours[14][tuesday].names, hours[14][tuesday].takeover) == ([], False)
    assert hours[14][tuesday].gap
    # Sunday's overnight shift: from 22:00 on Sunday, and (the Sunday before) into
    # Monday's early hours; Tuesday's are a gap.
    assert (hours[23][sunday].names, hours[23][sunday].gap) == (["Floor"], False)
    assert (hours[3][monday].names, hours[3][monday].gap) == (["Floor"], False)
    assert (hours[3][tuesday].names, hours[3][tuesday].gap) == ([], True)


def test_a_week_is_named_by_its_iso_number() -> None:
    assert week_of("2026-W01", date(2026, 6, 1)).monday == date(2025, 12, 29)
    assert week_of("2026-W53", date(2026, 6, 1)).monday == date(2026, 12, 28)
    first, last = week_of("2000-W01", date(2026, 6, 1)), week_of("2100-W52", date(2026, 6, 1))
    assert first.monday == date(2000, 1, 3)
    assert last.monday == date(2100, 12, 27)
    # No link to a week that is not shown.
    assert (first.before, first.after) == (None, "2000-W02")
    assert (last.before, last.after) == ("2100-W51", None)
    for wrong in ("2026-W54", "2026-1", "26-W01", "2026-W00", "0001-W01", "9999-W52", "1970-W01"):
        with pytest.raises(HTTPException) as refused:
            week_of(wrong, date(2026, 6, 1))
        assert refused.value.status_code == 404
