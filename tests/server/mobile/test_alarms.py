"""The phone button's alarm over HTTPS: enrolled once from a one-time link, signed by
the phone's own key, one incident per alert id however often it is resent, and the
phone reads back received -> help is coming (with who) -> resolved."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from panicbutton.log.spec import format_time
from panicbutton.wire import new_alert_id
from server.models import Incident, LogEntry
from server.people.roles import Role
from tests.harness import reply_code
from tests.server.mobile.kit import Phone, enrolled_phone, phone_link
from tests.server.people_helpers import (
    BASE_URL,
    Served,
    add_person,
    browser_as,
    entries,
)


def incidents(site: Served) -> list[Incident]:
    with site.server.services.sessions() as s:
        return list(s.scalars(select(Incident).order_by(Incident.id)))


def test_an_alarm_resent_five_times_is_one_incident_that_pages_naming_the_worker(
    site: Served, client: TestClient
) -> None:
    phone = enrolled_phone(site.server, client)
    alert_id = new_alert_id()
    answers = [phone.alarm(alert_id) for _ in range(5)]
    assert [a.status_code for a in answers] == [200] * 5, answers[-1].text
    assert {a.json()["incident"] for a in answers} == {answers[0].json()["incident"]}
    assert answers[0].json()["state"] == "received"
    [incident] = incidents(site)
    assert incident.device_id == incident.room_id == f"-phone-{phone.phone_id}"
    # Step 0 pages those on duty, naming the worker (not a room) and "mobile".
    assert site.twilio.wait_for(lambda sent: len(sent) >= 1)
    first = site.twilio.sent[0]
    assert first.body.startswith("ALARM Name of w-17 (mobile) "), first.body
    # The alarm's log entries name the phone, never the worker.
    with site.server.services.sessions() as s:
        bodies = b"".join(s.scalars(select(LogEntry.body).where(LogEntry.incident_id.is_not(None))))
    assert phone.phone_id.encode() in bodies
    assert b"w-17" not in bodies
    assert b"Name of w-17" not in bodies


def test_the_phone_sees_help_coming_with_who_after_an_sms_reply(
    site: Served, client: TestClient
) -> None:
    phone = enrolled_phone(site.server, client)
    alert_id = new_alert_id()
    assert phone.alarm(alert_id).status_code == 200
    assert site.twilio.wait_for(lambda sent: len(sent) >= 1)
    paged = site.twilio.sent[0].to
    code = reply_code(site.twilio.to(paged))
    reply = client.post(
        "/twilio/sms",
        data={"From": paged, "Body": code, "MessageSid": "SM" + "1" * 32},
        headers={"X-Twilio-Signature": _signature(site, "/twilio/sms", paged, code)},
    )
    assert reply.status_code == 200, reply.text
    state = phone.call("GET", f"/api/v1/phone/alarms/{alert_id}").json()
    assert state["state"] == "acknowledged"
    member = site.server.services.site.by_phone(paged)
    assert member is not None
    assert state["going"] == member.name


def _signature(site: Served, path: str, sender: str, body: str) -> str:
    params = {"From": sender, "Body": body, "MessageSid": "SM" + "1" * 32}
    return str(RequestValidator(site.twilio.auth_token).compute_signature(BASE_URL + path, params))


def test_refusals_change_nothing(site: Served, client: TestClient) -> None:
    phone = enrolled_phone(site.server, client)
    # Another key claiming this phone's id.
    stranger = Phone(client, phone_id=phone.phone_id)
    assert stranger.alarm().status_code == 401
    # The link works once.
    add_person(site.server, "w-18", Role.WORKER)
    token = phone_link(site.server, "w-18")
    assert Phone(client).enrol(token).status_code == 201
    replay = Phone(client).enrol(token)
    assert replay.status_code == 410, replay.text
    # Same PIN twice, or a PIN a guesser tries first: refused, and the link stays good.
    token = phone_link(site.server, "w-18")
    same = Phone(client).enrol(token, pin="4826", duress="4826")
    assert same.status_code == 422
    assert "differ" in same.json()["detail"]
    assert Phone(client).enrol(token).status_code == 201
    # A non-alarm request from a phone whose clock is an hour off.
    late = Phone(client, key=phone.key, phone_id=phone.phone_id, skew_ms=3_600_000)
    assert late.call("GET", "/api/v1/phone/me").status_code == 401
    assert late.alarm().status_code == 200, "an alarm is never refused for the phone's clock"
    # A revoked phone.
    revoked = browser_as(site.server, "manager").post(
        f"/api/v1/people/w-17/phones/{phone.phone_id}/revoke"
    )
    assert revoked.status_code == 204, revoked.text
    refused = phone.alarm()
    assert refused.status_code == 401
    assert "removed by a manager" in refused.json()["detail"]
    assert len(incidents(site)) == 1


def test_a_flood_of_new_alarms_is_throttled(site: Served, client: TestClient) -> None:
    phone = enrolled_phone(site.server, client)
    codes = [phone.alarm().status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    assert len(incidents(site)) == 3


def test_a_link_for_someone_without_the_worker_role_is_refused(
    site: Served, client: TestClient
) -> None:
    add_person(site.server, "s-9", Role.STAFF)
    answer = browser_as(site.server, "manager").post("/api/v1/people/s-9/phone-link")
    assert answer.status_code == 422
    assert "worker role" in answer.json()["detail"]


def test_the_log_does_not_tie_an_enrolled_phone_to_its_worker(
    site: Served, client: TestClient
) -> None:
    """The link a manager makes for a worker's phone is logged without the worker, so
    the link and the enrolment that follows cannot join the phone's alarms to them."""
    phone = enrolled_phone(site.server, client)
    with site.server.services.sessions() as s:
        entries = {
            e.type: e.data
            for e in s.scalars(
                select(LogEntry).where(LogEntry.type.in_(("signin.link_issued", "phone.enrolled")))
            )
        }
    assert entries["signin.link_issued"]["purpose"] == "phone"
    assert "person" not in entries["signin.link_issued"]
    assert entries["phone.enrolled"] == {"phone": phone.phone_id}


def test_another_device_s_alert_id_is_refused_and_shows_nothing_of_its_alarm(
    site: Served, client: TestClient
) -> None:
    phone = enrolled_phone(site.server, client)
    other = enrolled_phone(site.server, client, worker="w-18")
    theirs = new_alert_id()
    assert other.alarm(theirs).status_code == 200
    for presses in (1, 4):
        refused = phone.alarm(theirs, presses=presses)
        assert refused.status_code == 409, refused.text
        # Nothing of the other alarm: not its number, kind, state, who is going, presses.
        assert refused.json() == {"detail": "this alert id is not this phone's: make a new one"}
    [incident] = incidents(site)
    assert (incident.device_id, incident.presses) == (f"-phone-{other.phone_id}", 1)
    assert [d["device"] for _, d in entries(site.server, "alert.refused")] == [
        f"-phone-{phone.phone_id}"
    ]
    # The phone's own alarm under a new id goes through.
    assert phone.alarm().status_code == 200
    assert len(incidents(site)) == 2


def test_closing_an_account_or_taking_the_worker_role_back_revokes_its_phones(
    site: Served, client: TestClient
) -> None:
    untouched = enrolled_phone(site.server, client, worker="w-16")
    no_longer = enrolled_phone(site.server, client, worker="w-17")
    closed = enrolled_phone(site.server, client, worker="w-18")
    second = Phone(client)  # w-18's second phone
    assert second.enrol(phone_link(site.server, "w-18"), number="+32470555009").status_code == 201
    manager = browser_as(site.server, "manager")
    assert manager.delete("/api/v1/people/w-17/roles/worker").status_code == 200
    assert manager.post("/api/v1/people/w-18/close").status_code == 200
    for phone in (no_longer, closed, second):
        refused = phone.alarm()
        assert refused.status_code == 401, refused.text
        assert "removed by a manager" in refused.json()["detail"]
    assert untouched.alarm().status_code == 200
    revoked = entries(site.server, "phone.revoked")
    assert sorted(d["phone"] for _, d in revoked) == sorted(
        p.phone_id for p in (no_longer, closed, second)
    )
    assert {d["by"] for _, d in revoked} == {"manager"}
    listed = manager.get("/api/v1/people/w-17/phones").json()
    assert [p["revoked_at"] is not None for p in listed] == [True]


def test_an_alarm_whose_press_time_cannot_be_kept_is_kept_at_its_arrival(
    site: Served, client: TestClient
) -> None:
    phone = enrolled_phone(site.server, client)
    sent = []
    # No time zone; the year 1 less an hour; the year 9999 plus one: never lost for it.
    for pressed_at in (
        "2026-01-01T00:00:00",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
    ):
        alert_id = new_alert_id()
        answer = phone.call(
            "POST", "/api/v1/phone/alarms", {"alert_id": alert_id, "pressed_at": pressed_at}
        )
        assert answer.status_code == 200, (pressed_at, answer.text)
        sent.append(alert_id)
        site.clock.advance(1)
    kept = incidents(site)
    assert [i.alert_id for i in kept] == sent
    assert all(i.pressed_at == i.received_at for i in kept)
    # The record says so: the log entry's device_time is its own time of arrival.
    with site.server.services.sessions() as s:
        raised = s.scalars(select(LogEntry).where(LogEntry.type == "alert.raised")).all()
        assert [e.data["device_time"] for e in raised] == [format_time(e.at) for e in raised]
    # A time that can be kept is kept as the phone sent it.
    plain = phone.call(
        "POST",
        "/api/v1/phone/alarms",
        {"alert_id": new_alert_id(), "pressed_at": "1970-01-01T00:00:00Z"},
    )
    assert plain.status_code == 429  # three open already; the flood limit, not a 500


def test_a_phone_clock_past_the_year_9999_still_alarms_and_is_told_to_set_it(
    site: Served, client: TestClient
) -> None:
    phone = enrolled_phone(site.server, client)
    # X-Phone-Time of 15 digits: the year 10209.
    far = Phone(
        client,
        key=phone.key,
        phone_id=phone.phone_id,
        skew_ms=260_000_000_000_000 - int(time.time() * 1000),
    )
    assert far.alarm().status_code == 200, "an alarm is never refused for the phone's clock"
    me = far.call("GET", "/api/v1/phone/me")
    assert me.status_code == 401, me.text
    assert "clock" in me.json()["detail"]
    assert len(incidents(site)) == 1


def test_a_nul_character_in_an_enrolment_is_refused_and_the_link_stays_good(
    site: Served, client: TestClient
) -> None:
    add_person(site.server, "w-18", Role.WORKER)
    token = phone_link(site.server, "w-18")
    phone = Phone(client)
    body = {
        "token": token,
        "public_key": phone.public_key,
        "pin": "4827",
        "duress_pin": "6093",
        "number": "+32470555002",
        "label": "my\x00phone",
    }
    for bad in (body, {**body, "label": "", "token": token + "\x00"}):
        refused = client.post("/api/v1/phone/enrol", json=bad)
        assert refused.status_code == 422, refused.text
        assert "NUL" in str(refused.json()["detail"])
    assert phone.enrol(token).status_code == 201
