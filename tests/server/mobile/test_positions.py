"""Positions a worker's phone shares during its alarm: they reach the responder's map page
through the link in their page's SMS, absurd values and floods are refused with nothing
kept, sharing stops when the alarm is over, the log says only that a position was
shared, and the positions go a few days after the end (the log still verifies)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from pydantic import SecretStr
from sqlalchemy import func, select

from panicbutton.wire import new_alert_id
from server.mobile.tables import CheckIn, MobilePhone, Position
from server.models import Incident, IncidentKind, Page
from server.paging.links import MAP, make_token
from server.people.roles import Role
from tests.server.mobile.kit import Phone, enrolled_phone
from tests.server.people_helpers import (
    BASE_URL,
    Served,
    add_person,
    browser_as,
    client_as,
    entries,
    log_bodies,
    served,
)

SECRET = "map-links-secret-for-the-tests-0123456789"
#: The Grand-Place, Brussels.
LAT, LON = 50.846677, 4.352446


@pytest.fixture
def site(database_url: str, tmp_path: Path) -> Iterator[Served]:
    with served(
        database_url,
        tmp_path,
        link_secret=SecretStr(SECRET),
        retention_positions_days=7,
        retention_presence_days=30,
    ) as running:
        yield running


def share(phone: Phone, alert_id: str, **fix: Any) -> Response:
    """A position as the page sends it (the phone's clock: the real one)."""
    body = {
        "latitude": LAT,
        "longitude": LON,
        "accuracy": 12.0,
        "taken_at": datetime.now(UTC).isoformat(),
        **fix,
    }
    return phone.call("POST", f"/api/v1/phone/alarms/{alert_id}/positions", body)


def stored(site: Served) -> int:
    with site.server.services.sessions() as s:
        return s.scalar(select(func.count()).select_from(Position)) or 0


def incident_of(site: Served, alert_id: str) -> Incident:
    with site.server.services.sessions() as s:
        found = s.scalar(select(Incident).where(Incident.alert_id == alert_id))
        assert found is not None
        return found


def map_link(site: Served, incident_id: int) -> tuple[str, str]:
    """(the map link of the first SMS page of this incident, the staff member it went
    to): from the SMS when it carries one, else made as the pager makes it."""
    assert site.twilio.wait_for(lambda sent: len(sent) >= 1)
    with site.server.services.sessions() as s:
        page = s.scalars(
            select(Page)
            .where(Page.incident_id == incident_id, Page.channel == "sms")
            .order_by(Page.id)
        ).first()
        assert page is not None
    staff = site.server.services.site.member(page.staff_id)
    for body in site.twilio.to(staff.phone):
        if found := re.search(r"https://\S+/map/\S+", body):
            return found.group(0), page.staff_id
    token = make_token(SECRET, page.id, page.created_at, kind=MAP)
    return f"{BASE_URL}/map/{token}", page.staff_id


def resolve(site: Served, incident_id: int) -> None:
    answer = client_as(site.server, "manager").post(
        f"/api/v1/incidents/{incident_id}/resolve", json={"outcome": "genuine"}
    )
    assert answer.status_code == 200, answer.text


def test_positions_reach_the_map_page_through_the_link_in_the_sms(
    site: Served, client: TestClient
) -> None:
    phone = enrolled_phone(site.server, client)
    alert_id = new_alert_id()
    assert phone.alarm(alert_id).status_code == 200
    incident = incident_of(site, alert_id)
    # What the worker shared when they started a check-in session (written elsewhere).
    with site.server.services.sessions.begin() as s:
        s.add(
            CheckIn(
                phone_id=phone.phone_id,
                person_id="w-17",
                client_id="c" * 32,
                started_at=site.clock.now() - timedelta(hours=1),
                ends_at=site.clock.now() - timedelta(minutes=5),
                note="Hotel <b>Astoria</b>, room 12",
                state="missed",
                alert_id=alert_id,
            )
        )
    for n, (lat, accuracy) in enumerate([(LAT - 0.001, 40.0), (LAT - 0.0005, 25.0), (LAT, 12.0)]):
        if n:
            site.clock.advance(5)
        answer = share(phone, alert_id, latitude=lat, accuracy=accuracy)
        assert answer.status_code == 204, answer.text
    assert stored(site) == 3

    link, staff_id = map_link(site, incident.id)
    page = client.get(link)
    assert page.status_code == 200, page.text
    html = page.text
    assert "Name of w-17 (mobile)" in html
    assert "Hotel &lt;b&gt;Astoria&lt;/b&gt;, room 12" in html
    # Newest first, each with its accuracy and age; the newest opens in a maps app.
    rows = re.findall(r"<tr>\s*<td><time[^>]*>([^<]+)</time>.*?<td>([^<]+)</td>", html, re.S)
    assert [accuracy for _, accuracy in rows] == ["± 12 m", "± 25 m", "± 40 m"]
    assert all(age.endswith("ago") for age, _ in rows), rows
    assert f'href="geo:{LAT:.6f},{LON:.6f}?q={LAT:.6f},{LON:.6f}"' in html
    assert f"mlat={LAT:.6f}&amp;mlon={LON:.6f}#map=17/" in html
    assert html.count('class="accuracy"') == 3
    assert "data-refresh" in html
    for name, value in (
        ("cache-control", "no-store"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
    ):
        assert page.headers[name] == value
    assert "script-src 'self';" in page.headers["content-security-policy"]
    assert "unsafe-inline" not in page.headers["content-security-policy"]

    # Each opening is a view of the record by that member of staff, logged once a while.
    assert client.get(link).status_code == 200
    views = [d for _, d in entries(site.server, "record.viewed")]
    assert [(v["by"], v["scope"]) for v in views] == [(staff_id, f"incident:{incident.id}")]

    # The log says once that a position was shared, and never where.
    assert [d for _, d in entries(site.server, "position.shared")] == [{"phone": phone.phone_id}]
    bodies = b"".join(log_bodies(site.server))
    for coordinate in (f"{LAT:.4f}", f"{LON:.4f}", "50.8461", "4.3524"):
        assert coordinate.encode() not in bodies


def test_an_expired_or_forged_link_shows_only_that_it_expired(
    site: Served, client: TestClient
) -> None:
    phone = enrolled_phone(site.server, client)
    alert_id = new_alert_id()
    assert phone.alarm(alert_id).status_code == 200
    assert share(phone, alert_id).status_code == 204
    link, _ = map_link(site, incident_of(site, alert_id).id)
    forged = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
    site.clock.advance(2 * 3600 + 1)
    for url in (link, forged, f"{BASE_URL}/map/nothing"):
        page = client.get(url)
        assert page.status_code == 410
        assert "This link has expired." in page.text
        assert "Ce lien a expiré." in page.text
        assert "Name of w-17" not in page.text
        assert "± 12" not in page.text
        assert page.headers["cache-control"] == "no-store"
    assert entries(site.server, "record.viewed") == []


def test_bad_values_are_refused_and_nothing_is_kept(site: Served, client: TestClient) -> None:
    phone = enrolled_phone(site.server, client)
    alert_id = new_alert_id()
    assert phone.alarm(alert_id).status_code == 200
    now = datetime.now(UTC)
    bad: list[tuple[dict[str, Any], str]] = [
        ({"latitude": 90.5}, "latitude"),
        ({"longitude": -180.01}, "longitude"),
        ({"latitude": float("nan")}, "latitude"),
        ({"longitude": float("inf")}, "longitude"),
        ({"latitude": "NaN"}, "latitude"),
        ({"accuracy": 0}, "accuracy"),
        ({"accuracy": -3}, "accuracy"),
        ({"accuracy": 100_001}, "accuracy"),
        ({"accuracy": float("inf")}, "accuracy"),
        ({"taken_at": "1970-01-01T00:00:00Z"}, "before 2020"),
        ({"taken_at": "2019-12-31T23:59:59+00:00"}, "before 2020"),
        ({"taken_at": (now + timedelta(minutes=2)).isoformat()}, "ahead"),
        ({"taken_at": (now - timedelta(minutes=11)).isoformat()}, "10 minutes old"),
        ({"taken_at": now.replace(tzinfo=None).isoformat()}, "taken_at"),
        ({"taken_at": "yesterday"}, "taken_at"),
    ]
    for fix, words in bad:
        answer = share(phone, alert_id, **fix)
        assert answer.status_code == 422, (fix, answer.text)
        assert words in answer.json()["detail"], (fix, answer.json())
    # Not this phone's alarm, no alarm at all, a duress alarm (the phone never knows of it).
    other = enrolled_phone(site.server, client, worker="w-18")
    theirs = new_alert_id()
    assert other.alarm(theirs).status_code == 200
    duress = new_alert_id()
    site.server.services.mobile.raise_alarm(
        phone_id=phone.phone_id,
        alert_id=duress,
        pressed_at=site.clock.now(),
        kind=IncidentKind.DURESS,
        via="checkin",
    )
    for alarm in (theirs, new_alert_id(), duress):
        answer = share(phone, alarm)
        assert answer.status_code == 404, answer.text
        assert answer.json()["detail"] == "this phone raised no alarm with that id"
    # Signed by another key: not the phone's.
    stranger = Phone(client, phone_id=phone.phone_id)
    assert share(stranger, alert_id).status_code == 401
    assert stored(site) == 0
    assert entries(site.server, "position.shared") == []
    # A good one still goes through.
    assert share(phone, alert_id).status_code == 204


def test_more_than_one_position_in_5_s_is_throttled(site: Served, client: TestClient) -> None:
    phone = enrolled_phone(site.server, client)
    alert_id = new_alert_id()
    assert phone.alarm(alert_id).status_code == 200
    assert share(phone, alert_id).status_code == 204
    too_soon = share(phone, alert_id, accuracy=8.0)
    assert too_soon.status_code == 429
    assert too_soon.headers["Retry-After"] == "5"
    assert "5 s" in too_soon.json()["detail"]
    site.clock.advance(3)
    assert share(phone, alert_id).headers["Retry-After"] == "2"
    site.clock.advance(2)
    assert share(phone, alert_id, accuracy=8.0).status_code == 204
    assert stored(site) == 2
    assert len(entries(site.server, "position.shared")) == 1


def test_after_the_end_sharing_is_refused_and_the_link_shows_no_position(
    site: Served, client: TestClient
) -> None:
    phone = enrolled_phone(site.server, client)
    alert_id = new_alert_id()
    assert phone.alarm(alert_id).status_code == 200
    assert share(phone, alert_id).status_code == 204
    incident = incident_of(site, alert_id)
    link, _ = map_link(site, incident.id)
    resolve(site, incident.id)

    site.clock.advance(10)
    over = share(phone, alert_id)
    assert over.status_code == 409
    assert over.json()["detail"] == "the alarm is over: stop sharing"
    assert stored(site) == 1

    page = client.get(link)
    assert page.status_code == 200
    assert "The alarm is over" in page.text
    assert "± 12 m" not in page.text
    assert f"{LAT:.5f}" not in page.text
    assert "geo:" not in page.text
    assert "data-refresh" not in page.text

    # In the console: staff see none either; a reviewer (the manager, who reads French)
    # sees them until they are deleted.
    add_person(site.server, "s-1", Role.STAFF)
    for who, shows in (("s-1", False), ("manager", True)):
        browser = browser_as(site.server, who)
        url = f"/console/incidents/{incident.id}/map"
        assert 'name="reason"' in browser.get(url).text  # asked why, once per session
        given = browser.post(
            "/console/reason",
            data={
                "csrf": browser.headers["X-CSRF-Token"],
                "reason": "checking the map after the alarm",
                "next": url,
            },
            follow_redirects=False,
        )
        assert given.status_code == 303, given.text
        shown = browser.get(url)
        assert shown.status_code == 200
        assert "Name of w-17 (mobile)" in shown.text
        assert 'id="map-over"' in shown.text
        assert ("± 12 m" in shown.text) is shows, who


def test_positions_go_days_after_the_end_and_the_log_still_verifies(
    site: Served, client: TestClient
) -> None:
    services = site.server.services
    phone = enrolled_phone(site.server, client)
    alert_id = new_alert_id()
    assert phone.alarm(alert_id).status_code == 200
    assert share(phone, alert_id).status_code == 204
    incident = incident_of(site, alert_id)
    with services.sessions.begin() as s:
        s.add(
            CheckIn(
                phone_id=phone.phone_id,
                person_id="w-17",
                client_id="d" * 32,
                started_at=site.clock.now(),
                ends_at=site.clock.now() + timedelta(hours=1),
                note="a client's address",
                state="closed",
                closed_at=site.clock.now(),
            )
        )
    # A position of an alarm still open is never purged.
    services.keeper.purge(site.clock.advance(8 * 86400))
    assert stored(site) == 1
    resolve(site, incident.id)
    services.keeper.purge(site.clock.advance(6 * 86400))
    assert stored(site) == 1
    services.keeper.purge(site.clock.advance(2 * 86400))
    assert stored(site) == 0

    # The check-in's note goes with the presence register (30 days here, counted from
    # its end), and a revoked phone's row the same time after it was revoked: its alarms
    # then name it by its id.
    def kept() -> tuple[int, bool]:
        with services.sessions() as s:
            checkins = s.scalar(select(func.count()).select_from(CheckIn)) or 0
            return checkins, s.get(MobilePhone, phone.phone_id) is not None

    assert kept() == (1, True)
    revoked = browser_as(site.server, "manager").post(
        f"/api/v1/people/w-17/phones/{phone.phone_id}/revoke"
    )
    assert revoked.status_code == 204
    services.keeper.purge(site.clock.advance(15 * 86400))
    assert kept() == (0, True)
    services.keeper.purge(site.clock.advance(16 * 86400))
    assert kept() == (0, False)
    services.book.forget()
    assert services.site.room(incident.room_id).label == f"{phone.phone_id} (mobile)"

    services.keeper.sign()
    assert services.keeper.self_verify(site.clock.now()) is not None


def test_a_position_sent_again_is_refused_and_an_old_fix_never_looks_new(
    site: Served, client: TestClient
) -> None:
    phone = enrolled_phone(site.server, client)
    phone.clock = site.clock  # the phone's clock is right
    alert_id = new_alert_id()
    assert phone.alarm(alert_id).status_code == 200
    path = f"/api/v1/phone/alarms/{alert_id}/positions"

    def captured(latitude: float) -> tuple[bytes, dict[str, str]]:
        """A position request as the page signs it now (to send now, or later)."""
        fix = {
            "latitude": latitude,
            "longitude": LON,
            "accuracy": 12.0,
            "taken_at": site.clock.now().isoformat(),
        }
        body = json.dumps(fix).encode()
        return body, {**phone.headers("POST", path, body), "Content-Type": "application/json"}

    def send(request: tuple[bytes, dict[str, str]]) -> Response:
        answer: Response = client.post(path, content=request[0], headers=request[1])
        return answer

    def newest() -> Position:
        with site.server.services.sessions() as s:
            found = s.scalars(select(Position).order_by(Position.id.desc())).first()
            assert found is not None
            return found

    first = captured(LAT)
    assert send(first).status_code == 204
    # The same request again (captured and replayed, or a retry): refused, nothing kept.
    site.clock.advance(6)
    again = send(first)
    assert again.status_code == 422, again.text
    assert "sent already" in again.json()["detail"]
    assert stored(site) == 1
    # Held back 11 minutes: too old by the server's clock, whatever its X-Phone-Time says.
    held = captured(LAT + 0.01)
    site.clock.advance(11 * 60)
    late = send(held)
    assert late.status_code == 422, late.text
    assert "10 minutes old" in late.json()["detail"]
    # Held back 3 minutes: kept as what it is, a fix 3 minutes old (not a fresh one).
    held = captured(LAT + 0.02)
    taken = site.clock.now()
    site.clock.advance(3 * 60)
    assert send(held).status_code == 204
    assert (newest().latitude, newest().taken_at) == (LAT + 0.02, taken)
    assert stored(site) == 2

    # A phone whose clock is two hours slow still shares: judged on its own clock.
    slow = new_alert_id()
    assert phone.alarm(slow).status_code == 200
    phone.skew_ms = -2 * 3600 * 1000
    answer = share(phone, slow, taken_at=(site.clock.now() - timedelta(hours=2)).isoformat())
    assert answer.status_code == 204, answer.text
    assert newest().taken_at == site.clock.now()
