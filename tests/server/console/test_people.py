"""The people and presence pages in Chromium: staff are refused people's data (page and
API), a manager opens an account whose invitation link is shown once, a name made of
markup and bidi controls stays text, and a worker checked in shows as here."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from server.people.roles import Role
from server.people.tables import Person
from tests.harness import RECEPTION, System, open_person
from tests.server.console.conftest import accessible

if TYPE_CHECKING:
    from playwright.sync_api import Page

#: A name someone typed: markup, and a right-to-left override that would turn the line.
#: A new member of staff's number, not yet confirmed.
NIGHT = "+32470000009"
HOSTILE = "<script>window.pwned=1</script>\u202eevil"


def test_staff_are_refused_people_pages_and_the_people_api(
    console: System, open_page: Callable[..., Page]
) -> None:
    page = open_page("reception", "/console/board")
    for path in ("/console/people", "/console/people/manager"):
        answer = page.goto(console.base_url + path)
        assert answer is not None
        assert answer.status == 403, path
        assert page.locator("h1").inner_text() == "Not allowed"
        assert "people" in page.locator("main").inner_text()
        assert "Manager" not in page.locator("main").inner_text()
    # The API refuses the same browser session too.
    for path in ("/api/v1/people", "/api/v1/people/manager", "/api/v1/phone-problems"):
        assert page.request.get(console.base_url + path).status == 403, path
    assert page.locator("nav").get_by_role("link", name="People").count() == 0


def test_an_invitation_link_shows_once_and_a_hostile_name_stays_text(
    console: System, open_page: Callable[..., Page]
) -> None:
    assert console.server is not None
    services = console.server.services
    with services.sessions.begin() as s:
        s.get_one(Person, "floor").phone_problem = "unreachable (30003)"
    page = open_page("manager", "/console/people")
    page.on("dialog", lambda dialog: dialog.accept())
    assert page.locator("#person-reception").count() == 1
    assert "confirmé" in page.locator("#person-reception").inner_text()
    problems = page.get_by_role("region", name="Problèmes de téléphone")
    assert "Floor" in problems.inner_text()
    assert "unreachable (30003)" in problems.inner_text()
    assert "unreachable (30003)" in page.locator("#person-floor").inner_text()
    accessible(page)

    page.get_by_label("Identifiant (pseudonyme").fill("w-17")
    page.get_by_label("Nom montré aux collègues").fill(HOSTILE)
    page.get_by_label("worker").check()
    page.get_by_role("button", name="Ouvrir le compte").click()
    box = page.locator("#link-box")
    box.wait_for()
    link = page.locator("#link").input_value()
    assert "/enrol/" in link, link
    assert len(link.rsplit("/", 1)[1]) >= 20, link
    assert "n'est montré qu'une fois" in box.inner_text()
    page.get_by_role("button", name="Copier le lien").click()
    page.locator("#copied").wait_for()

    # Shown once: the page read again has no link, and the account is listed.
    page.reload()
    assert page.locator("#link-box").is_hidden()
    assert link not in page.content()
    row = page.locator("#person-w-17")
    assert row.locator("th").inner_text() == "<script>window.pwned=1</script>\\u202eevil"
    assert page.evaluate("window.pwned") is None
    assert "worker" in row.inner_text()

    # The person's own page: an inspector's role with an end date.
    row.get_by_role("link").click()
    page.locator("#grant").wait_for()
    assert page.locator("#person-name bdi").inner_text() == (
        "<script>window.pwned=1</script>\\u202eevil"
    )
    accessible(page)
    page.get_by_label("Attribuer un rôle").select_option("inspector")
    page.get_by_role("button", name="Attribuer", exact=True).click()
    page.locator("#grant .form-problem").wait_for()  # an inspector's role must end
    assert "inspector" not in page.locator("#roles").inner_text()
    page.get_by_label("Prend fin le").fill("2099-01-01")
    page.get_by_role("button", name="Attribuer", exact=True).click()
    page.locator("#grant .form-problem", has_text="90").wait_for()  # at most 90 days ahead
    soon = services.clock.now().date() + timedelta(days=30)
    page.get_by_label("Prend fin le").fill(soon.isoformat())
    page.get_by_role("button", name="Attribuer", exact=True).click()
    page.locator("#roles li", has_text="inspector").wait_for()
    assert "jusqu'au" in page.locator("#roles li", has_text="inspector").inner_text()

    # A new invitation (the first stops working), then the account closed.
    page.get_by_role("button", name="Créer un nouveau lien").click()
    page.locator("#link-box").wait_for()
    again = page.locator("#link").input_value()
    assert "/enrol/" in again
    assert again != link
    page.get_by_role("button", name="Fermer le compte").click()
    page.get_by_text("Ce compte est fermé").wait_for()
    assert page.get_by_role("button", name="Créer un nouveau lien").count() == 0


def test_a_worker_checked_in_by_staff_shows_as_here_and_out_again(
    console: System, open_page: Callable[..., Page]
) -> None:
    assert console.server is not None
    open_person(console.server.services, "w-3", roles=(Role.WORKER,), name=HOSTILE)
    page = open_page("reception", "/console/presence")
    assert "No worker is checked in." in page.locator("#here").inner_text()
    assert "Your phone" in page.locator("main").inner_text()
    accessible(page)

    page.get_by_label("Worker", exact=True).select_option("w-3")
    page.get_by_label("Room (optional)").select_option("room-2")
    page.get_by_role("button", name="Check in", exact=True).click()
    page.locator("table#here").wait_for()
    here = page.locator("table#here tbody tr")
    assert here.count() == 1
    assert here.locator("th bdi").inner_text() == "<script>window.pwned=1</script>\\u202eevil"
    assert "Room 2" in here.inner_text()
    assert page.evaluate("window.pwned") is None
    assert "still here" in page.locator("#today").inner_text()
    accessible(page)

    here.get_by_role("button").click()
    page.locator("p#here").wait_for()
    today = page.locator("#today tbody tr")
    assert today.count() == 1
    assert "still here" not in today.inner_text()

    # Staff are paged: their own phone is on this page, with a test page.
    assert "confirmed: alarms page it" in page.locator("#my-phone").inner_text()
    page.get_by_role("button", name="Send me a test page").click()
    page.get_by_text("on its way to your phone").wait_for()
    assert console.twilio.wait_for(lambda _: len(console.twilio.to(RECEPTION)) == 1)

    # A new member of staff confirms their number here: until then they are not paged.
    open_person(console.server.services, "night", roles=(Role.STAFF,), phone=NIGHT)
    night = open_page("night", "/console/presence")
    assert "not confirmed" in night.locator("#my-phone").inner_text()
    night.get_by_role("button", name="Text me a code").click()
    night.get_by_text("A code is on its way by SMS.").wait_for()
    assert console.twilio.wait_for(lambda _: len(console.twilio.to(NIGHT)) == 1)
    [code] = re.findall(r"\b\d{3} ?\d{3}\b", console.twilio.to(NIGHT)[0])
    night.get_by_label("The 6-digit code").fill(code)
    night.get_by_role("button", name="Confirm my number").click()
    night.get_by_text("confirmed: alarms page it").wait_for()
