"""The check-in timer of a worker's phone: reminders by SMS 10 and 2 minutes before the
end, check-out with the PIN, the missed check-out alarm 5 minutes after the end (also
across a restart and with two servers on one database), the duress PIN that looks like
a check-out, wrong PINs, presence while a session runs, and bad input refused.

The server runs on a hand-moved clock; the test's phone signs with that clock too."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select

from panicbutton.wire import new_alert_id
from server.app import Server, build
from server.mobile import alarms, retention
from server.mobile.alarms import derived_alert_id
from server.mobile.checkins import ANSWER_FLOOR
from server.mobile.tables import CheckIn
from server.mobile.timer import RETRY
from server.models import Incident, LogEntry
from server.paging.messages import local_time
from server.people import presence
from server.people.roles import Role
from server.site import PHONE_PREFIX
from tests.harness import FLOOR, MANAGER, RECEPTION, sample_site, wait_until
from tests.server.mobile.kit import DURESS, PIN, Phone, phone_link
from tests.server.people_helpers import (
    BASE_URL,
    Served,
    add_person,
    browser_as,
    client_as,
    entries,
)

#: The numbers the test phones enrol with.
NUMBER, OTHER_NUMBER = "+32470555001", "+32470555002"
#: What a text to a worker must never say (the duress PIN stays a secret).
UNSAID = ("duress", "contrainte", "dwang", "alarm", "alerte", "PIN")
CLIENT_ID = "c0ffee" + "0" * 26
START = "/api/v1/phone/checkins"


def phone_of(site: Served, client: TestClient, worker: str = "w-17", **kw: Any) -> Phone:
    """An enrolled phone signing with the server's (hand-moved) clock."""
    add_person(site.server, worker, Role.WORKER, **kw)
    phone = Phone(client, clock=site.clock)
    token = phone_link(site.server, worker)
    answer = phone.enrol(token, number=NUMBER if worker == "w-17" else OTHER_NUMBER)
    assert answer.status_code == 201, answer.text
    return phone


def at(site: Served, minutes: float) -> str:
    """The server's time ``minutes`` from now, as the page sends it."""
    return (site.clock.now() + timedelta(minutes=minutes)).isoformat()


def start(phone: Phone, ends_at: str, *, client_id: str = CLIENT_ID, note: str = "") -> Response:
    return phone.call("POST", START, {"client_id": client_id, "ends_at": ends_at, "note": note})


def check_out(phone: Phone, pin: str, client_id: str = CLIENT_ID) -> Response:
    return phone.call("POST", f"{START}/{client_id}/checkout", {"pin": pin})


def extend(phone: Phone, ends_at: str, pin: str = PIN, client_id: str = CLIENT_ID) -> Response:
    return phone.call("POST", f"{START}/{client_id}/extend", {"ends_at": ends_at, "pin": pin})


def look(site: Served, seconds: float, *, wake: bool = True) -> datetime:
    """Move the clock, and wait until the timer has looked at the new time (``wake``
    makes it look; without, the test relies on it waking by itself when due)."""
    now = site.clock.advance(seconds)
    looked(site.server, now, wake=wake)
    return now


def looked(server: Server, now: datetime, *, wake: bool = True) -> None:
    """Wait until ``server``'s timer has looked at the time ``now`` (waking it first)."""
    timer = server.services.checkin_timer
    if wake:
        timer.wake()
    assert wait_until(lambda: timer.looked_at is not None and timer.looked_at >= now)


def incidents(site: Served, server: Server | None = None) -> list[Incident]:
    """Phones' incidents (a room unit may go offline as the clock moves on: not ours)."""
    with (server or site.server).services.sessions() as s:
        return list(
            s.scalars(
                select(Incident)
                .where(Incident.device_id.startswith(PHONE_PREFIX))
                .order_by(Incident.id)
            )
        )


def session_row(site: Served, phone: Phone, client_id: str = CLIENT_ID) -> CheckIn:
    with site.server.services.sessions() as s:
        return s.scalars(
            select(CheckIn).where(
                CheckIn.phone_id == phone.phone_id, CheckIn.client_id == client_id
            )
        ).one()


def present(site: Served) -> list[str]:
    with site.server.services.sessions() as s:
        return [p.person_id for p in presence.present(s)]


def ours(site: Served, *, server: Server | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The log entries of check-ins, presence and alarms."""
    return entries(
        server or site.server,
        "checkin.started",
        "checkin.extended",
        "checkin.reminded",
        "checkin.closed",
        "presence.changed",
        "alert.raised",
    )


def steps(site: Served, phone: Phone) -> list[tuple[str, dict[str, Any]]]:
    """The check-in log entries of ``phone``, its id left out (to compare two phones)."""
    return [
        (t, {k: "<phone>" if v == phone.phone_id else v for k, v in d.items()})
        for t, d in ours(site)
        if t.startswith("checkin.") and d.get("phone") == phone.phone_id
    ]


def resolve(site: Served, incident: Incident) -> None:
    answer = client_as(site.server, "manager").post(
        f"/api/v1/incidents/{incident.id}/resolve", json={"outcome": "genuine"}
    )
    assert answer.status_code == 200, answer.text


def reminded(site: Served, server: Server | None = None) -> list[int]:
    """The minutes before the end of each reminder sent, as the log says."""
    return [d["minutes"] for t, d in ours(site, server=server) if t == "checkin.reminded"]


def test_reminders_come_10_and_2_minutes_before_the_end_and_a_check_out_closes_it(
    site: Served, client: TestClient
) -> None:
    phone = phone_of(site, client)
    add_person(site.server, "w-17", Role.WORKER, language="nl")  # the worker reads Dutch
    ends_at = at(site, 30)
    started = start(phone, ends_at, note="Hotel Metropole, room 412")
    assert started.status_code == 201, started.text
    assert started.json() == {
        "client_id": CLIENT_ID,
        "started_at": site.clock.now().isoformat().replace("+00:00", "Z"),
        "ends_at": ends_at.replace("+00:00", "Z"),
        "state": "running",
        "note": "Hotel Metropole, room 412",
    }
    me = phone.call("GET", "/api/v1/phone/me").json()
    assert me["checkin"] == started.json()

    look(site, 20 * 60 - 1)  # one second before the first reminder: nothing yet
    assert reminded(site) == []
    assert site.twilio.to(NUMBER) == []
    look(site, 1, wake=False)  # the timer wakes by itself at the time
    assert site.twilio.wait_for(lambda _: len(site.twilio.to(NUMBER)) == 1)
    end = datetime.fromisoformat(ends_at)
    expected = (
        f"panicbutton: uw check-in eindigt om {local_time(end, 'Europe/Brussels')}. "
        "Check uit of verleng in de app."
    )
    assert site.twilio.to(NUMBER) == [expected]

    look(site, 8 * 60 - 1)  # 2 minutes and 1 second before the end
    assert reminded(site) == [10]
    look(site, 1, wake=False)
    assert site.twilio.wait_for(lambda _: len(site.twilio.to(NUMBER)) == 2)
    assert site.twilio.to(NUMBER) == [expected, expected]
    for text in site.twilio.to(NUMBER):
        assert not any(word.lower() in text.lower() for word in UNSAID), text
    assert [d for t, d in ours(site) if t == "checkin.reminded"] == [
        {"phone": phone.phone_id, "minutes": 10},
        {"phone": phone.phone_id, "minutes": 2},
    ]

    closed = check_out(phone, PIN)
    assert closed.status_code == 200, closed.text
    assert closed.json() == {**started.json(), "state": "closed"}
    assert phone.call("GET", "/api/v1/phone/me").json()["checkin"] is None
    look(site, 30 * 60)  # well past the end and its grace: nothing alarms
    assert incidents(site) == []
    assert len(site.twilio.to(NUMBER)) == 2
    assert [t for t, _ in ours(site)] == [
        "presence.changed",
        "checkin.started",
        "checkin.reminded",
        "checkin.reminded",
        "checkin.closed",
        "presence.changed",
    ]
    # The note stays in the session's row; the log never holds it, and names the phone,
    # never the worker (the reminders' texts too).
    with site.server.services.sessions() as s:
        assert b"Metropole" not in b"".join(s.scalars(select(LogEntry.body)))
    sent = [d for _, d in entries(site.server, "message.sent")]
    assert [d["staff"] for d in sent] == [f"-phone-{phone.phone_id}"] * 2
    assert {d["purpose"] for d in sent} == {"checkin_reminder"}
    for _, data in ours(site):
        assert "w-17" not in map(str, data.values()), data
    assert session_row(site, phone).note == "Hotel Metropole, room 412"


def test_a_session_not_closed_alarms_5_minutes_after_its_end_once(
    site: Served, client: TestClient
) -> None:
    phone = phone_of(site, client)
    # 10 minutes: the 10-minute reminder is due at once, so only the 2-minute one comes.
    assert start(phone, at(site, 10)).status_code == 201
    look(site, 15 * 60 - 1)
    assert incidents(site) == []
    assert site.twilio.wait_for(lambda _: len(site.twilio.to(NUMBER)) == 1)
    assert reminded(site) == [2]
    assert session_row(site, phone).state == "running"

    look(site, 1, wake=False)
    assert wait_until(lambda: len(incidents(site)) == 1)
    [incident] = incidents(site)
    assert incident.kind == "missed_checkout"
    assert incident.device_id == f"-phone-{phone.phone_id}"
    # Staff on duty are paged, naming the worker (mobile).
    assert wait_until(lambda: site.twilio.to(RECEPTION) and site.twilio.to(FLOOR))
    assert "Name of w-17 (mobile)" in site.twilio.to(RECEPTION)[0]
    row = session_row(site, phone)
    assert (row.state, row.alert_id) == ("missed", incident.alert_id)
    [raised] = [d for t, d in ours(site) if t == "alert.raised"]
    assert (raised["kind"], raised["via"]) == ("missed_checkout", "checkin")
    # The phone sees its alarm, and no running session.
    me = phone.call("GET", "/api/v1/phone/me").json()
    assert me["checkin"] is None
    assert [(a["alert_id"], a["kind"]) for a in me["alarms"]] == [
        (incident.alert_id, "missed_checkout")
    ]

    look(site, 20 * 60)
    assert len(incidents(site)) == 1
    # A late check-out with the PIN is taken (the worker is safe) and stays "missed".
    late = check_out(phone, PIN)
    assert late.status_code == 200, late.text
    assert late.json()["state"] == "missed"
    assert session_row(site, phone).closed_at == site.clock.now()
    assert len(incidents(site)) == 1
    assert len(site.twilio.to(NUMBER)) == 1  # the reminder; no page goes to the worker


def test_a_missed_check_out_alarms_even_while_the_phone_has_many_alarms_open(
    site: Served, client: TestClient
) -> None:
    phone = phone_of(site, client)
    assert start(phone, at(site, 5)).status_code == 201
    # As many alarms as a phone may have open: a new one from the phone is a flood...
    assert [phone.alarm().status_code for _ in range(4)] == [200, 200, 200, 429]
    # ... but the server's own alarm for the missed check-out is never refused.
    look(site, 10 * 60)
    assert wait_until(lambda: len(incidents(site)) == 4)
    assert incidents(site)[-1].kind == "missed_checkout"
    assert session_row(site, phone).state == "missed"


def test_a_restart_loses_no_running_session_and_alarms_on_time(
    site: Served, database_url: str
) -> None:
    with TestClient(site.server.app, base_url=BASE_URL) as client:
        phone = phone_of(site, client)
        assert start(phone, at(site, 30)).status_code == 201
        look(site, 60)
    # Down for 24 minutes: the 10-minute reminder fell due meanwhile.
    site.clock.advance(24 * 60)
    again = build(site.server.settings, site=sample_site(), clock=site.clock)
    with TestClient(again.app, base_url=BASE_URL):
        # At start it catches up: the reminder it missed, once.
        assert site.twilio.wait_for(lambda _: len(site.twilio.to(NUMBER)) == 1)
        site.clock.advance(3 * 60)  # 2 minutes before the end
        assert site.twilio.wait_for(lambda _: len(site.twilio.to(NUMBER)) == 2)
        looked(again, site.clock.advance(7 * 60 - 1))
        assert incidents(site, again) == []
        site.clock.advance(1)
        assert wait_until(lambda: len(incidents(site, again)) == 1)
        [incident] = incidents(site, again)
        assert incident.kind == "missed_checkout"
        assert incident.received_at == site.clock.now()
        assert wait_until(lambda: site.twilio.to(RECEPTION))
        assert reminded(site, again) == [10, 2]


def test_two_servers_on_one_database_remind_and_alarm_once(
    site: Served, client: TestClient
) -> None:
    other = build(site.server.settings, site=sample_site(), clock=site.clock)
    with TestClient(other.app, base_url=BASE_URL):
        phone = phone_of(site, client)
        assert start(phone, at(site, 12)).status_code == 201
        other.services.checkin_timer.wake()  # a session started through the first
        for minutes in (2, 8, 7, 10):  # each reminder, the alarm, then later
            now = site.clock.advance(minutes * 60)
            looked(site.server, now)
            looked(other, now)
        assert site.twilio.wait_for(lambda _: len(site.twilio.to(NUMBER)) >= 2)
        assert len(site.twilio.to(NUMBER)) == 2
        assert len(incidents(site)) == 1
        assert reminded(site) == [10, 2]
        assert len([t for t, _ in ours(site) if t == "alert.raised"]) == 1
        first_pages = [
            (d["staff"], d["channel"])
            for _, d in entries(site.server, "page.queued")
            if d["step"] == 0
        ]
        assert sorted(first_pages) == sorted(set(first_pages))
        assert {staff for staff, _ in first_pages} == {"reception", "floor"}


def test_the_duress_pin_looks_like_a_check_out_and_pages_staff_silently(
    site: Served, client: TestClient
) -> None:
    calm = phone_of(site, client, "w-17")
    forced = phone_of(site, client, "w-18")
    ends_at = at(site, 30)
    for phone in (calm, forced):
        assert start(phone, ends_at, note="Rue Haute 5").status_code == 201
    site.clock.advance(60)
    took = []
    for phone, pin in ((calm, PIN), (forced, DURESS)):
        began = time.monotonic()
        took.append((check_out(phone, pin), time.monotonic() - began))
    (normal, normal_took), (duress, duress_took) = took
    # Neither comes sooner: the duress PIN's extra work hides under the same floor.
    assert min(normal_took, duress_took) >= ANSWER_FLOOR
    # The same answer, byte for byte (the same client id, times and note on both).
    assert (normal.status_code, normal.content) == (duress.status_code, duress.content)
    assert normal.json()["state"] == "closed"
    same = ("content-type", "content-length", "cache-control", "x-content-type-options")
    assert [normal.headers.get(h) for h in same] == [duress.headers.get(h) for h in same]

    # The same log entries for both check-outs, and the same presence change.
    assert steps(site, calm) == steps(site, forced)
    assert present(site) == []
    # The duress PIN raised an alarm, paging staff on duty; the phone never sees it.
    assert wait_until(lambda: len(incidents(site)) == 1)
    [incident] = incidents(site)
    assert (incident.kind, incident.device_id) == ("duress", f"-phone-{forced.phone_id}")
    assert session_row(site, forced).duress_alert_id == incident.alert_id
    assert session_row(site, calm).duress_alert_id is None
    assert wait_until(lambda: site.twilio.to(RECEPTION) and site.twilio.to(FLOOR))
    for phone in (calm, forced):
        me = phone.call("GET", "/api/v1/phone/me").json()
        assert (me["alarms"], me["checkin"]) == ([], None)
    assert forced.call("GET", f"/api/v1/phone/alarms/{incident.alert_id}").status_code == 404
    # Sent again (the answer was lost): the same answer, no second alarm.
    assert check_out(forced, DURESS).content == duress.content
    look(site, 40 * 60)  # past both ends: neither session alarms
    assert len(incidents(site)) == 1
    assert site.twilio.to(NUMBER) == []
    assert site.twilio.to(OTHER_NUMBER) == []


def test_wrong_pins_are_refused_then_locked_and_the_session_still_alarms(
    site: Served, client: TestClient
) -> None:
    phone = phone_of(site, client)
    # A right PIN after wrong ones closes, and starts the count again.
    assert start(phone, at(site, 10), client_id="1" * 32).status_code == 201
    assert check_out(phone, "0000", "1" * 32).status_code == 403
    assert check_out(phone, PIN, "1" * 32).json()["state"] == "closed"

    assert start(phone, at(site, 10)).status_code == 201
    answers = [check_out(phone, "0000") for _ in range(5)]
    assert [a.status_code for a in answers] == [403] * 5
    assert answers[0].json()["detail"].startswith("Wrong PIN: 4 tries left")
    assert answers[3].json()["detail"].startswith("Wrong PIN: 1 try left")
    assert "refused for 15 minutes" in answers[4].json()["detail"]
    locked = check_out(phone, PIN)  # even the right PIN, now
    assert locked.status_code == 429, locked.text
    assert locked.headers["Retry-After"] == "900"
    assert "keeps running" in locked.json()["detail"]
    assert session_row(site, phone).state == "running"
    # Locked out, the worker is still protected: the missed check-out alarm goes.
    look(site, 15 * 60)
    assert wait_until(lambda: len(incidents(site)) == 1)
    assert incidents(site)[0].kind == "missed_checkout"
    assert check_out(phone, PIN).status_code == 200  # 15 minutes later: taken again
    assert [t for t, _ in ours(site)].count("checkin.closed") == 2


def test_presence_counts_while_a_session_runs_and_not_after(
    site: Served, client: TestClient
) -> None:
    phone = phone_of(site, client)
    assert present(site) == []
    assert start(phone, at(site, 30)).status_code == 201
    assert present(site) == ["w-17"]
    with site.server.services.sessions() as s:
        stay = presence.stay_of(s, "w-17")
        assert stay is not None
        assert (stay.room_id, stay.in_by) == (None, "self")
    assert check_out(phone, PIN).status_code == 200
    assert present(site) == []
    assert [d for t, d in ours(site) if t == "presence.changed"] == [
        {"present": 1, "by": "self"},
        {"present": 0, "by": "self"},
    ]

    # Checked in at the premises already: that stay is kept, and outlives the session.
    services = site.server.services
    with services.sessions.begin() as s:
        kept = presence.check_in(
            s, person_id="w-17", by="reception", now=site.clock.now(), site=services.site
        ).id
    assert start(phone, at(site, 30), client_id="2" * 32).status_code == 201
    assert check_out(phone, PIN, "2" * 32).status_code == 200
    with services.sessions() as s:
        stay = presence.stay_of(s, "w-17")
        assert stay is not None
        assert stay.id == kept

    # A missed session leaves the worker present: nobody knows them safe.
    with services.sessions.begin() as s:
        presence.check_out(s, person_id="w-17", by="reception", now=site.clock.now())
    assert start(phone, at(site, 5), client_id="3" * 32).status_code == 201
    look(site, 10 * 60)
    assert wait_until(lambda: len(incidents(site)) == 1)
    assert present(site) == ["w-17"]


def test_a_worker_out_on_a_check_in_with_nobody_on_duty_is_a_duty_gap(
    site: Served, client: TestClient
) -> None:
    # Nobody always on duty and no shift: every moment is uncovered.
    manager = client_as(site.server, "manager")
    version = manager.get("/api/v1/site").json()["version"]
    emptied = manager.put(
        "/api/v1/site/duty", json={"version": version, "on_duty": [], "default": ["reception"]}
    )
    assert emptied.status_code == 200, emptied.text
    phone = phone_of(site, client)
    assert start(phone, at(site, 30)).status_code == 201
    [(_, started)] = entries(site.server, "duty.gap_started")
    assert started == {"present": 1}
    assert wait_until(lambda: site.twilio.to(MANAGER))
    assert site.twilio.to(MANAGER)[0].startswith("SANS GARDE")
    assert check_out(phone, PIN).status_code == 200
    [(_, ended)] = entries(site.server, "duty.gap_ended")
    assert ended["by"] is None  # the last worker left


def test_a_revoked_phone_cannot_check_out_and_its_session_still_alarms(
    site: Served, client: TestClient
) -> None:
    phone = phone_of(site, client)
    assert start(phone, at(site, 10)).status_code == 201
    revoke = f"/api/v1/people/w-17/phones/{phone.phone_id}/revoke"
    assert browser_as(site.server, "manager").post(revoke).status_code == 204
    refused = check_out(phone, PIN)
    assert refused.status_code == 401
    assert "removed by a manager" in refused.json()["detail"]
    assert session_row(site, phone).state == "running"
    look(site, 15 * 60)
    assert wait_until(lambda: len(incidents(site)) == 1)
    assert incidents(site)[0].kind == "missed_checkout"
    # Staff still learn whose phone it is.
    assert wait_until(lambda: site.twilio.to(RECEPTION))
    assert "Name of w-17 (mobile)" in site.twilio.to(RECEPTION)[0]


def test_bad_input_is_refused_and_changes_nothing(site: Served, client: TestClient) -> None:
    phone = phone_of(site, client)
    other = phone_of(site, client, "w-18")
    assert start(other, at(site, 30), client_id="a" * 32).status_code == 201
    before = len(entries(site.server))

    def refused(answer: Response, status: int, words: str = "") -> None:
        assert answer.status_code == status, answer.text
        assert words in str(answer.json()["detail"]), answer.text

    window = "between 5 minutes and 24 hours from now"
    refused(start(phone, at(site, -1)), 422, window)
    refused(start(phone, "1970-01-01T00:00:00Z"), 422, window)
    refused(start(phone, at(site, 3 * 24 * 60)), 422, window)
    refused(start(phone, at(site, 4)), 422, window)
    naive = (site.clock.now() + timedelta(minutes=30)).replace(tzinfo=None).isoformat()
    refused(start(phone, naive), 422, "time zone")
    refused(start(phone, at(site, 30), note="x" * 501), 422, "note")
    # PostgreSQL keeps no NUL character in text: refused for what it is, on every database.
    refused(start(phone, at(site, 30), note="Hotel X\x00 room 4"), 422, "NUL")
    refused(start(phone, at(site, 30), client_id="not hex" + "0" * 25), 422, "client_id")
    refused(start(phone, at(site, 30), client_id="A" * 32), 422, "client_id")
    refused(phone.call("POST", START, {"ends_at": at(site, 30)}), 422, "client_id")
    # Another worker's session: not this phone's.
    refused(check_out(phone, PIN, "a" * 32), 404, "no check-in with that id")
    refused(
        extend(phone, at(site, 60), client_id="a" * 32),
        404,
        "no check-in with that id",
    )
    refused(check_out(phone, PIN, "not-hex"), 422)
    refused(check_out(phone, "", "b" * 32), 422)
    with site.server.services.sessions() as s:
        assert s.scalar(select(func.count()).select_from(CheckIn)) == 1
    # Nothing about check-ins, phones or alarms was logged (the server's own background
    # entries, such as a lost broker link, may come meanwhile).
    logged = [t for t, _ in entries(site.server)[before:]]
    assert not [t for t in logged if t.startswith(("checkin.", "phone.", "alert."))], logged
    # The other worker's session is untouched.
    assert other.call("GET", "/api/v1/phone/me").json()["checkin"]["state"] == "running"

    # One at a time; the same start again is the same session; a closed one stays closed.
    first = start(phone, at(site, 30))
    assert first.status_code == 201
    again = start(phone, at(site, 45))
    assert (again.status_code, again.json()) == (200, first.json())
    refused(start(phone, at(site, 30), client_id="b" * 32), 409, "already running")
    no_pin = phone.call("POST", f"{START}/{CLIENT_ID}/extend", {"ends_at": at(site, 60)})
    refused(no_pin, 422, "pin")
    extended = extend(phone, at(site, 60))
    assert extended.status_code == 200, extended.text
    assert extended.json()["ends_at"] == at(site, 60).replace("+00:00", "Z")
    refused(
        extend(phone, at(site, 25 * 60)),
        422,
        window,
    )
    closed = check_out(phone, PIN)
    assert check_out(phone, PIN).content == closed.content  # sent again: the same answer
    refused(
        extend(phone, at(site, 60)),
        409,
        "closed already",
    )
    assert [t for t, d in ours(site) if d.get("phone") == phone.phone_id] == [
        "checkin.started",
        "checkin.extended",
        "checkin.closed",
    ]


def test_extending_needs_the_pin_and_the_duress_pin_extends_alike_and_alarms_once(
    site: Served, client: TestClient
) -> None:
    calm = phone_of(site, client, "w-17")
    forced = phone_of(site, client, "w-18")
    for phone in (calm, forced):
        assert start(phone, at(site, 30), note="Rue Haute 5").status_code == 201
    site.clock.advance(60)
    new_end = at(site, 60)
    took = []
    for phone, pin in ((calm, PIN), (forced, DURESS)):
        began = time.monotonic()
        took.append((extend(phone, new_end, pin), time.monotonic() - began))
    (normal, normal_took), (duress, duress_took) = took
    # The same answer, byte for byte, and neither sooner than the floor.
    assert min(normal_took, duress_took) >= ANSWER_FLOOR
    assert (normal.status_code, normal.content) == (duress.status_code, duress.content)
    assert normal.json()["ends_at"] == new_end.replace("+00:00", "Z")
    same = ("content-type", "content-length", "cache-control", "x-content-type-options")
    assert [normal.headers.get(h) for h in same] == [duress.headers.get(h) for h in same]
    assert steps(site, calm) == steps(site, forced)
    # The duress PIN raised a silent alarm, paging staff; the phone never sees it.
    assert wait_until(lambda: len(incidents(site)) == 1)
    [incident] = incidents(site)
    assert (incident.kind, incident.device_id) == ("duress", f"-phone-{forced.phone_id}")
    assert session_row(site, forced).duress_alert_id == incident.alert_id
    assert session_row(site, forced).state == "running"
    assert wait_until(lambda: site.twilio.to(RECEPTION) and site.twilio.to(FLOOR))
    me = [phone.call("GET", "/api/v1/phone/me").json() for phone in (calm, forced)]
    assert [(m["alarms"], m["checkin"]) for m in me] == [([], normal.json())] * 2
    # Nor can it read it by sending its id: answered as another device's would be.
    probe = forced.alarm(incident.alert_id, presses=5)
    assert probe.status_code == 409, probe.text
    assert probe.json() == {"detail": "this alert id is not this phone's: make a new one"}
    assert incidents(site)[0].presses == 1
    assert entries(site.server, "alert.re_pressed") == []

    # Once per session: a second duress extension, or a duress check-out, raises no more.
    assert extend(forced, at(site, 90), DURESS).status_code == 200
    assert check_out(forced, DURESS).json()["state"] == "closed"
    assert check_out(calm, PIN).json()["state"] == "closed"
    look(site, 3 * 60 * 60)
    assert len(incidents(site)) == 1
    assert site.twilio.to(NUMBER) == site.twilio.to(OTHER_NUMBER) == []


def test_a_refused_extension_is_refused_alike_for_the_duress_pin_which_still_alarms(
    site: Served, client: TestClient
) -> None:
    calm = phone_of(site, client, "w-17")
    forced = phone_of(site, client, "w-18")
    for phone in (calm, forced):
        assert start(phone, at(site, 30)).status_code == 201
    too_far = at(site, 25 * 60)
    normal, duress = extend(calm, too_far, PIN), extend(forced, too_far, DURESS)
    assert normal.status_code == 422, normal.text
    assert (normal.status_code, normal.content) == (duress.status_code, duress.content)
    assert wait_until(lambda: len(incidents(site)) == 1)
    assert incidents(site)[0].kind == "duress"
    assert session_row(site, forced).ends_at == session_row(site, calm).ends_at


def test_wrong_pins_at_extending_count_toward_the_same_lock_and_the_end_stays(
    site: Served, client: TestClient
) -> None:
    phone = phone_of(site, client)
    assert start(phone, at(site, 10)).status_code == 201
    ends_at = session_row(site, phone).ends_at
    wrong = [extend(phone, at(site, 60), "0000") for _ in range(3)]
    wrong += [check_out(phone, "0000") for _ in range(2)]
    assert [a.status_code for a in wrong] == [403] * 5
    assert wrong[0].json()["detail"].startswith("Wrong PIN: 4 tries left")
    assert "refused for 15 minutes" in wrong[4].json()["detail"]
    for locked in (extend(phone, at(site, 60), PIN), extend(phone, at(site, 60), DURESS)):
        assert locked.status_code == 429, locked.text
        assert locked.headers["Retry-After"] == "900"
        assert "keeps running" in locked.json()["detail"]
    assert check_out(phone, PIN).status_code == 429
    assert session_row(site, phone).ends_at == ends_at
    assert [t for t, d in ours(site) if t == "checkin.extended"] == []
    # Nobody holding the phone put the end off: the missed check-out alarm goes on time.
    look(site, 15 * 60)
    assert wait_until(lambda: len(incidents(site)) == 1)
    assert incidents(site)[0].kind == "missed_checkout"


def test_no_phone_can_send_a_check_in_alarm_s_id_first(site: Served, client: TestClient) -> None:
    evil = phone_of(site, client, "w-18")
    phone = phone_of(site, client)
    # The ids the server once made from the first sessions' row ids, sent first (each
    # resolved at once, so that the flood limit lets the next one in).
    guessed = [derived_alert_id(kind, n) for kind in ("missed", "duress") for n in (1, 2, 3)]
    for alert_id in guessed:
        assert evil.alarm(alert_id).status_code == 200
        resolve(site, incidents(site)[-1])
    # A missed check-out and a duress check-out of another worker still alarm, theirs.
    assert start(phone, at(site, 10), client_id="1" * 32).status_code == 201
    look(site, 16 * 60)
    assert start(phone, at(site, 10), client_id="2" * 32).status_code == 201
    assert check_out(phone, DURESS, "2" * 32).status_code == 200
    assert wait_until(lambda: len(incidents(site)) == 8)
    raised = incidents(site)[6:]
    assert [(i.kind, i.device_id) for i in raised] == [
        ("missed_checkout", f"-phone-{phone.phone_id}"),
        ("duress", f"-phone-{phone.phone_id}"),
    ]
    assert not {i.alert_id for i in raised} & set(guessed)
    assert session_row(site, phone, "1" * 32).alert_id == raised[0].alert_id
    assert session_row(site, phone, "2" * 32).duress_alert_id == raised[1].alert_id
    assert entries(site.server, "alert.refused") == []
    assert wait_until(lambda: {i.id for i in raised} <= _paged(site))


def _paged(site: Served) -> set[int]:
    """The incidents some page was queued for."""
    with site.server.services.sessions() as s:
        rows = s.scalars(select(LogEntry).where(LogEntry.type == "page.queued")).all()
        return {row.incident_id for row in rows if row.incident_id is not None}


def test_sessions_after_retention_deleted_the_newest_still_alarm(
    site: Served, client: TestClient
) -> None:
    # SQLite gives a deleted row's id to the next row: no alarm may depend on it.
    phone = phone_of(site, client)

    def session(client_id: str, pin: str | None) -> None:
        assert start(phone, at(site, 10), client_id=client_id).status_code == 201
        if pin is not None:
            assert check_out(phone, pin, client_id).status_code == 200
        else:
            look(site, 16 * 60)

    session("1" * 32, DURESS)
    session("2" * 32, None)
    assert wait_until(lambda: len(incidents(site)) == 2)
    for incident in incidents(site):
        resolve(site, incident)
    with site.server.services.sessions.begin() as s:
        assert retention.purge_checkins(s, before=site.clock.now() + timedelta(days=1)) == 2
    session("3" * 32, DURESS)
    session("4" * 32, None)
    assert wait_until(lambda: len(incidents(site)) == 4)
    raised = incidents(site)
    assert [i.kind for i in raised] == ["duress", "missed_checkout"] * 2
    assert [i.state for i in raised[2:]] == ["open", "open"]
    assert len({i.alert_id for i in raised}) == 4
    assert wait_until(lambda: {i.id for i in raised} <= _paged(site))


def test_a_check_in_alarm_takes_another_fresh_id_when_one_is_taken(
    site: Served, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = phone_of(site, client, "w-18")
    phone = phone_of(site, client)
    theirs, own = new_alert_id(), new_alert_id()
    assert other.alarm(theirs).status_code == 200
    assert phone.alarm(own).status_code == 200
    # The next fresh ids happen to be another phone's alarm's, then this phone's own.
    fresh = iter([theirs, own])
    real = alarms.fresh_alert_id
    monkeypatch.setattr(alarms, "fresh_alert_id", lambda: next(fresh, None) or real())
    assert start(phone, at(site, 5)).status_code == 201
    look(site, 10 * 60)
    assert wait_until(lambda: len(incidents(site)) == 3)
    missed = incidents(site)[-1]
    assert (missed.kind, missed.device_id) == ("missed_checkout", f"-phone-{phone.phone_id}")
    assert missed.alert_id not in (theirs, own)
    assert session_row(site, phone).alert_id == missed.alert_id
    assert [i.presses for i in incidents(site)[:2]] == [1, 1]
    assert wait_until(lambda: missed.id in _paged(site))


def test_a_check_in_alarm_not_recorded_leaves_the_session_running_and_goes_once_later(
    site: Served, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = phone_of(site, client, "w-18")
    theirs = new_alert_id()
    assert other.alarm(theirs).status_code == 200
    phone = phone_of(site, client)
    # Every fresh id of the first try is taken: the claim and the alarm roll back together.
    fresh = iter([theirs] * alarms.FRESH_TRIES)
    real = alarms.fresh_alert_id
    monkeypatch.setattr(alarms, "fresh_alert_id", lambda: next(fresh, None) or real())
    assert start(phone, at(site, 5)).status_code == 201
    # Not woken by hand: it looks by itself, once, as the time passes its due time (a
    # wake during that pass would make it look again at once, and try again then).
    look(site, 10 * 60, wake=False)
    row = session_row(site, phone)
    assert (row.state, row.alert_id) == ("running", None)
    assert len(incidents(site)) == 1
    # The timer tries again a few seconds later, and the session raises its one alarm.
    look(site, RETRY)
    assert wait_until(lambda: len(incidents(site)) == 2)
    row = session_row(site, phone)
    assert (row.state, row.alert_id) == ("missed", incidents(site)[-1].alert_id)
    look(site, 60 * 60)
    assert len(incidents(site)) == 2
    raised = [d for t, d in ours(site) if t == "alert.raised"]
    assert [d["kind"] for d in raised] == ["panic", "missed_checkout"]
