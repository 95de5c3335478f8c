"""The mobile button in the console, in Chromium: a manager enrols a worker's phone from
their person page (the one-time link and its QR code show) and revokes it; a phone's
alarm shows on the board with its last position's age, and its map opens from there."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select

from panicbutton.wire import new_alert_id
from server.console.people import qr_svg
from server.models import Page as PageRow
from server.paging.links import MAP, make_token
from server.people.roles import Role
from tests.harness import System, open_person
from tests.server.console.conftest import accessible
from tests.server.mobile.kit import Phone
from tests.server.people_helpers import browser_as

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

SECRET = "map-links-secret-for-the-browser-tests-01"


def enrol(console: System, link: str) -> Phone:
    assert console.server is not None
    phone = Phone(TestClient(console.server.app))
    answer = phone.enrol(link.rsplit("#", 1)[1])
    assert answer.status_code == 201, answer.text
    return phone


def test_a_manager_enrols_a_workers_phone_with_its_qr_code_and_revokes_it(
    console: System, open_page: Callable[..., Page]
) -> None:
    assert console.server is not None
    open_person(console.server.services, "w-17", roles=(Role.WORKER,), name="Sam")
    page = open_page("manager", "/console/people/w-17")
    page.on("dialog", lambda dialog: dialog.accept())
    assert page.locator("#phones").count() == 0
    page.locator("form.gives-phone-link button").click()
    page.locator("#phone-qr[src^='data:image/svg+xml']").wait_for()
    # Shown by the browser (an SVG document it can show as an image, not a broken one).
    page.wait_for_function("document.getElementById('phone-qr').naturalWidth > 100")
    link = page.locator("#phone-link").input_value()
    assert link.startswith("https://alarm.example.test/hooks/phone/enrol#"), link
    # The code is the link itself: segno draws the same picture from the same text.
    source = page.locator("#phone-qr").get_attribute("src") or ""
    assert urllib.parse.unquote(source.partition(",")[2]).encode() == qr_svg(link)
    assert page.get_by_role("img", name="Le lien d'enregistrement en code QR").is_visible()
    accessible(page)

    phone = enrol(console, link)
    page.reload()
    row = page.locator(f"#phone-{phone.phone_id}")
    assert "test phone" in row.inner_text()
    assert "+32 4** ** ** 01" in row.inner_text()
    assert "555" not in row.inner_text()
    row.get_by_role("button", name=f"Révoquer le téléphone {phone.phone_id}").click()
    page.locator(f"#phone-{phone.phone_id}:has-text('Révoqué le')").wait_for()
    assert row.get_by_role("button").count() == 0
    assert phone.alarm().status_code == 401


@pytest.mark.settings(link_secret=SecretStr(SECRET))
def test_a_phones_alarm_shows_on_the_board_and_its_map_in_the_console_and_the_sms_link(
    console: System, open_page: Callable[..., Page], chromium: Browser
) -> None:
    assert console.server is not None
    services = console.server.services
    open_person(services, "w-17", roles=(Role.WORKER,), name="Sam")
    made = browser_as(console.server, "manager").post("/api/v1/people/w-17/phone-link")
    assert made.status_code == 201, made.text
    phone = enrol(console, made.json()["link"])
    alert_id = new_alert_id()
    assert phone.alarm(alert_id).status_code == 200
    shared = phone.call(
        "POST",
        f"/api/v1/phone/alarms/{alert_id}/positions",
        {
            "latitude": 50.846677,
            "longitude": 4.352446,
            "accuracy": 12,
            "taken_at": datetime.now(UTC).isoformat(),
        },
    )
    assert shared.status_code == 204, shared.text

    board = open_page("manager", "/console/board")
    card = board.locator(f"#room--phone-{phone.phone_id}")
    card.wait_for()
    assert card.get_attribute("data-state") == "received"
    assert "Sam (mobile)" in card.inner_text()
    assert "Dernière position il y a" in card.inner_text()
    accessible(board)

    card.get_by_role("link", name="Carte").click()
    board.locator("textarea[name=reason]").fill("répondre à l'alerte de Sam")
    board.locator("textarea[name=reason]").press("Tab")
    board.locator("form[action='/console/reason'] button").click()
    board.locator("#map-live").wait_for()
    assert board.locator("#map-who").inner_text() == "Sam (mobile)"
    assert "± 12 m" in board.locator("#map-positions").inner_text()
    assert board.get_by_role("img", name="Les 1 dernières positions", exact=False).is_visible()
    href = board.locator("#map-geo").get_attribute("href")
    assert href == "geo:50.846677,4.352446?q=50.846677,4.352446"
    accessible(board)
    [incident] = [i.id for i in console.incidents() if i.alert_id == alert_id]
    board.goto(f"{console.base_url}/console/incidents/{incident}")
    board.locator("#map-link").click()
    board.locator("#map-live").wait_for()

    # The responder's phone, from the link in their SMS: no sign-in, the same map.
    with services.sessions() as s:
        page = s.scalars(
            select(PageRow).where(PageRow.incident_id == incident).order_by(PageRow.id)
        ).first()
        assert page is not None
    token = make_token(SECRET, page.id, page.created_at, kind=MAP)
    phone_browser = chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        responder = phone_browser.new_page()
        responder.goto(f"{console.base_url}/map/{token}")
        assert "Sam (mobile)" in responder.locator("h1").inner_text()
        assert "± 12 m" in responder.locator("#map-positions").inner_text()
        assert responder.locator("svg.map circle.newest").count() == 1
        accessible(responder)
    finally:
        phone_browser.close()
