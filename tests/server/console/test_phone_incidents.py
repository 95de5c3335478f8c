"""A worker's phone's alarms read right in the console (no browser needed): the board
shows the phone as a card of its own, in words for its kind, and never as a system
alert; the incident list filters on the phone and on the kinds duress and missed
check-out; an incident's page tells how it was raised and links to its map."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from panicbutton.wire import new_alert_id
from server.models import IncidentKind
from server.people.roles import Role
from tests.server.mobile.kit import enrolled_phone
from tests.server.people_helpers import BASE_URL, Served, add_person, browser_as, served


@pytest.fixture
def site(database_url: str, tmp_path: Path) -> Iterator[Served]:
    with served(database_url, tmp_path) as running:
        yield running


@pytest.fixture
def client(site: Served) -> Iterator[TestClient]:
    with TestClient(site.server.app, base_url=BASE_URL) as c:
        yield c


def reader(site: Served) -> TestClient:
    """A manager reading English, who gave their reason for opening records."""
    add_person(site.server, "boss", Role.MANAGER)
    browser = browser_as(site.server, "boss")
    given = browser.post(
        "/console/reason",
        data={
            "csrf": browser.headers["X-CSRF-Token"],
            "reason": "checking how phone alarms read",
            "next": "/console/incidents",
        },
        follow_redirects=False,
    )
    assert given.status_code == 303, given.text
    return browser


def test_a_phones_alarms_read_right_on_the_board_and_in_the_records(
    site: Served, client: TestClient
) -> None:
    phone = enrolled_phone(site.server, client)
    mobile = site.server.services.mobile
    for kind in (IncidentKind.MISSED_CHECKOUT, IncidentKind.DURESS):
        mobile.raise_alarm(
            phone_id=phone.phone_id,
            alert_id=new_alert_id(),
            pressed_at=site.clock.now(),
            kind=kind,
            via="checkin",
        )
    browser = reader(site)

    board = browser.get("/console/board").text
    cards = re.findall(
        rf'<li class="room [^"]*" id="room--phone-{phone.phone_id}".*?</li>', board, re.S
    )
    assert len(cards) == 1, board
    [card] = cards
    assert "Name of w-17 (mobile)" in card
    assert "duress PIN at check-out" in card
    assert "Outside the premises (mobile button)." in card
    assert "No position shared yet." in card
    assert "Unit never heard from" not in card
    assert "nobody is on duty" not in board
    assert 'data-unanswered="1"' in board

    listed = browser.get("/console/incidents", params={"kind": "duress"}).text
    assert listed.count('class="incident-row') == 1
    assert "Duress (silent alarm)" in listed
    assert "Name of w-17 (mobile)" in listed
    assert '<option value="missed_checkout">Missed check-out</option>' in listed
    assert f'<option value="-phone-{phone.phone_id}">Name of w-17 (mobile)</option>' in listed
    by_phone = browser.get("/console/incidents", params={"room": f"-phone-{phone.phone_id}"})
    assert by_phone.text.count('class="incident-row') == 2

    missed, duress = 1, 2
    page = browser.get(f"/console/incidents/{duress}").text
    assert "checked out with the duress PIN: a silent alarm" in page
    assert f'href="/console/incidents/{duress}/map"' in page
    page = browser.get(f"/console/incidents/{missed}").text
    assert "did not check out in time" in page
