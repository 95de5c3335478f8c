"""Confirmed phones: a code sent by SMS proves a number is its owner's; a test page; a
number the provider reports as unreachable or opted out shows on the person and warns
the managers. No phone number appears in full in the log or in the server's log lines."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from panicbutton.wire import Alert, new_alert_id
from server.models import Page
from server.people.roles import Role
from tests.harness import FLOOR, MANAGER, RECEPTION, wait_until
from tests.server.people_helpers import (
    BASE_URL,
    Served,
    add_person,
    client_as,
    entries,
    log_bodies,
    served,
)

PHONES = (RECEPTION, FLOOR, MANAGER)


@pytest.fixture
def site(database_url: str, tmp_path: Path) -> Iterator[Served]:
    with served(database_url, tmp_path) as running:
        add_person(
            running.server, "manager", Role.MANAGER, phone=MANAGER, confirmed=True, language="fr"
        )
        add_person(running.server, "reception", Role.STAFF, phone=RECEPTION)
        yield running


@pytest.fixture
def reception(site: Served) -> TestClient:
    return client_as(site.server, "reception")


def code_sent(site: Served, phone: str, count: int = 1) -> str:
    """The code in the ``count``-th SMS sent to ``phone``."""
    assert site.twilio.wait_for(lambda sent: len([s for s in sent if s.to == phone]) >= count)
    found = re.search(r"\b(\d{6})\b", site.twilio.to(phone)[count - 1])
    assert found is not None, site.twilio.to(phone)
    return found.group(1)


def no_number_in_full(site: Served, caplog: pytest.LogCaptureFixture) -> None:
    for raw in log_bodies(site.server):
        for phone in PHONES:
            assert phone[1:].encode() not in raw
    for phone in PHONES:
        assert phone[1:] not in caplog.text


def test_the_code_sent_by_sms_confirms_the_phone(
    site: Served, reception: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    asked = reception.post("/api/v1/me/phone/code")
    assert asked.status_code == 200, asked.text
    code = code_sent(site, RECEPTION)
    assert "panicbutton" in site.twilio.to(RECEPTION)[0]
    wrong = "000000" if code != "000000" else "111111"
    assert reception.post("/api/v1/me/phone/confirm", json={"code": wrong}).status_code == 422
    done = reception.post("/api/v1/me/phone/confirm", json={"code": code})
    assert done.status_code == 200, done.text
    assert "confirmed" in done.json()["detail"]
    boss = client_as(site.server, "manager")
    assert boss.get("/api/v1/people/reception").json()["phone_confirmed"] is True
    assert ("phone.confirmed", {"staff": "reception"}) in entries(site.server)
    assert wait_until(lambda: entries(site.server, "message.sent"))
    assert entries(site.server, "message.sent")[0][1] == {
        "staff": "reception",
        "purpose": "phone_code",
        "code": None,
    }
    # Used once: the code does not confirm again, and a confirmed phone needs no code.
    again = reception.post("/api/v1/me/phone/confirm", json={"code": code})
    assert again.status_code == 409
    assert reception.post("/api/v1/me/phone/code").status_code == 409
    no_number_in_full(site, caplog)


def test_five_wrong_codes_lock_the_code(site: Served, reception: TestClient) -> None:
    assert reception.post("/api/v1/me/phone/code").status_code == 200
    code = code_sent(site, RECEPTION)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    answers = [reception.post("/api/v1/me/phone/confirm", json={"code": wrong}) for _ in range(5)]
    assert [a.status_code for a in answers] == [422, 422, 422, 422, 409]
    assert answers[0].json()["detail"] == "wrong code: 4 tries left"
    assert answers[3].json()["detail"] == "wrong code: 1 try left"
    assert "last try" in answers[4].json()["detail"]
    locked = reception.post("/api/v1/me/phone/confirm", json={"code": code})
    assert locked.status_code == 409
    assert "ask for a new one" in locked.json()["detail"]
    assert ("phone.confirmed", {"staff": "reception"}) not in entries(site.server)
    # A new code (a minute later) works.
    site.clock.advance(61)
    assert reception.post("/api/v1/me/phone/code").status_code == 200
    fresh = code_sent(site, RECEPTION, 2)
    assert reception.post("/api/v1/me/phone/confirm", json={"code": fresh}).status_code == 200


def test_codes_are_throttled_and_expire(site: Served, reception: TestClient) -> None:
    assert reception.post("/api/v1/me/phone/code").status_code == 200
    soon = reception.post("/api/v1/me/phone/code")
    assert soon.status_code == 429
    assert "less than a minute ago" in soon.json()["detail"]
    assert 1 <= int(soon.headers["Retry-After"]) <= 61
    code = code_sent(site, RECEPTION)
    site.clock.advance(11 * 60)
    expired = reception.post("/api/v1/me/phone/confirm", json={"code": code})
    assert expired.status_code == 409
    assert "expired" in expired.json()["detail"]
    for _ in range(4):  # five in a day in all
        assert reception.post("/api/v1/me/phone/code").status_code == 200
        site.clock.advance(61)
    day = reception.post("/api/v1/me/phone/code")
    assert day.status_code == 429
    assert "5 codes" in day.json()["detail"]
    assert site.twilio.wait_for(lambda sent: len(sent) == 5)
    site.clock.advance(24 * 3600)
    assert reception.post("/api/v1/me/phone/code").status_code == 200


def test_a_test_page_reaches_the_confirmed_phone(site: Served, reception: TestClient) -> None:
    unconfirmed = reception.post("/api/v1/me/test-page")
    assert unconfirmed.status_code == 409
    assert "not confirmed" in unconfirmed.json()["detail"]
    boss = client_as(site.server, "manager")
    sent = boss.post("/api/v1/me/test-page")
    assert sent.status_code == 202, sent.text
    assert site.twilio.wait_for(lambda s: any(m.to == MANAGER for m in s))
    assert site.twilio.to(MANAGER)[0].startswith("TEST à ")
    assert wait_until(lambda: entries(site.server, "message.sent"))
    assert entries(site.server, "message.sent")[0][1]["purpose"] == "test_page"
    # At most one a minute: a second one at once is refused with when to try again.
    again = boss.post("/api/v1/me/test-page")
    assert again.status_code == 429
    assert 0 < int(again.headers["Retry-After"]) <= 60
    assert "less than a minute ago" in again.json()["detail"]
    site.clock.advance(61)
    # And a test call, when asked for: pages are an SMS and a call.
    both = boss.post("/api/v1/me/test-page", json={"call": True})
    assert both.status_code == 202
    assert "call" in both.json()["detail"]
    assert site.twilio.wait_for_calls(lambda calls: any(c.to == MANAGER for c in calls))
    assert "Ceci est un test" in site.twilio.calls_to(MANAGER)[0].spoken
    assert wait_until(lambda: len(entries(site.server, "message.sent")) == 3)
    assert sorted(d["purpose"] for _, d in entries(site.server, "message.sent")) == [
        "test_call",
        "test_page",
        "test_page",
    ]
    add_person(site.server, "w-17", Role.WORKER, phone="+32470555666", confirmed=True)
    assert client_as(site.server, "w-17").post("/api/v1/me/test-page").status_code == 403


def _problems(site: Served) -> list[dict[str, object]]:
    answer = client_as(site.server, "manager").get("/api/v1/phone-problems")
    assert answer.status_code == 200
    result: list[dict[str, object]] = answer.json()
    return result


def test_a_page_refused_as_opted_out_marks_the_phone_and_warns_the_managers(
    site: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    add_person(site.server, "floor", Role.STAFF, phone=FLOOR, confirmed=True)
    # Only a confirmed phone is paged (the fixture left reception's to be confirmed).
    add_person(site.server, "reception", Role.STAFF, phone=RECEPTION, confirmed=True)
    site.twilio.fail(
        RECEPTION, code=21610, message="Attempt to send to unsubscribed recipient", times=10
    )
    alert = Alert(device_id="unit-1", alert_id=new_alert_id(), seq=1, pressed_at=site.clock.now())
    site.server.services.alerts.handle(alert)
    assert site.twilio.wait_for(
        lambda sent: any(m.to == MANAGER and "PROBLÈME" in m.body for m in sent)
    ), site.twilio.to(MANAGER)
    [warning] = [b for b in site.twilio.to(MANAGER) if "PROBLÈME" in b]
    assert "Reception" in warning  # the site's name for them
    assert "21610" in warning
    assert _problems(site) == [
        {
            "id": "reception",
            "name": "Reception",
            "phone": "+32 4** ** ** 01",
            "problem": "opted out of SMS (sent STOP); only calls reach it (Twilio error 21610)",
        }
    ]
    listed = client_as(site.server, "manager").get("/api/v1/people/reception").json()
    assert "opted out" in listed["phone_problem"]
    # Logged once per change, however many pages failed.
    assert wait_until(lambda: len(entries(site.server, "page.failed")) >= 2)  # SMS and call
    assert entries(site.server, "phone.problem") == [
        ("phone.problem", {"staff": "reception", "code": 21610})
    ]
    no_number_in_full(site, caplog)


def test_an_undelivered_status_30003_marks_the_phone(site: Served) -> None:
    add_person(site.server, "floor", Role.STAFF, phone=FLOOR, confirmed=True)
    alert = Alert(device_id="unit-2", alert_id=new_alert_id(), seq=1, pressed_at=site.clock.now())
    site.server.services.alerts.handle(alert)
    assert site.twilio.wait_for(lambda sent: any(m.to == FLOOR for m in sent))
    with site.server.services.sessions() as s:
        assert wait_until(
            lambda: s.scalar(
                select(Page.provider_sid).where(
                    Page.staff_id == "floor", Page.channel == "sms", Page.provider_sid.is_not(None)
                )
            )
        )
        page_id, sid = s.execute(
            select(Page.id, Page.provider_sid).where(
                Page.staff_id == "floor", Page.channel == "sms"
            )
        ).one()
    path = f"/twilio/status?pages={page_id}"
    params = {"MessageSid": sid or "", "MessageStatus": "undelivered", "ErrorCode": "30003"}
    signature = RequestValidator(site.twilio.auth_token).compute_signature(BASE_URL + path, params)
    client = TestClient(site.server.app)
    answer = client.post(path, data=params, headers={"X-Twilio-Signature": signature})
    assert answer.status_code == 200
    problems = {p["id"]: p["problem"] for p in _problems(site)}
    assert problems == {
        "floor": "unreachable: phone off or out of coverage for too long (Twilio error 30003)"
    }
    assert ("phone.problem", {"staff": "floor", "code": 30003}) in entries(site.server)
    assert site.twilio.wait_for(
        lambda sent: any(m.to == MANAGER and "30003" in m.body for m in sent)
    )
    # The owner confirms the number again (it works): the problem is cleared.
    floor = client_as(site.server, "floor")
    boss = client_as(site.server, "manager")
    assert boss.patch("/api/v1/people/floor", json={"phone": "+32470000099"}).status_code == 200
    assert _problems(site) == []
    assert floor.post("/api/v1/me/phone/code").status_code == 200
