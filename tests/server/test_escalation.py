"""Escalation: only a human acknowledgement stops the paging.

Real Mosquitto, real twilio library against the fake Twilio, SQLite and
PostgreSQL; the server runs on a clock the test moves by hand, so thirty
minutes of escalation take seconds while everything else is real.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr
from sqlalchemy import select

from panicbutton.clock import ManualClock
from panicbutton.wire import Alert, Feedback, alert_topic, feedback_topic, new_alert_id
from server import incidents
from server.models import Incident, Page
from tests import web
from tests.harness import (
    DEVICE_TOKENS,
    FLOOR,
    MANAGER,
    RECEPTION,
    System,
    reply_code,
    wait_until,
)

START = "2026-11-27T21:00:00+00:00"  # 22:00 in Brussels
START_AT = datetime.fromisoformat(START)
STAFF = ((RECEPTION, "reception"), (FLOOR, "floor"), (MANAGER, "manager"))
STEPS = {
    "steps": [{"after": 0, "who": "on_duty"}, {"after": 30, "who": "all_staff"}],
    "repeat_every": 60,
    "follow_up_after": 600,
}


def clock(system: System) -> ManualClock:
    assert isinstance(system.clock, ManualClock)
    return system.clock


def alert(system: System, device: str = "unit-1") -> int:
    """Publish one alert as ``device`` (like its room unit would) and return the incident."""
    assert system.server is not None
    before = len(system.incidents())
    payload = Alert(
        device_id=device, alert_id=new_alert_id(), seq=before + 1, pressed_at=clock(system).now()
    ).to_json()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device)
    client.username_pw_set(device, system.users[device])
    client.connect("127.0.0.1", system.mqtt_port)
    client.loop_start()
    try:
        client.publish(alert_topic(device), payload, qos=1).wait_for_publish(5)
        assert wait_until(lambda: len(system.incidents()) == before + 1)
    finally:
        client.disconnect()
        client.loop_stop()
    return system.incidents()[-1].id


def settle(system: System) -> None:
    """Wait until every job due by the hand-moved clock has run and its pages are out."""
    system.wait_idle()


def advance(system: System, seconds: float) -> None:
    clock(system).advance(seconds)
    settle(system)


def move_until(system: System, holds: Callable[[], object], timeout: float = 20.0) -> bool:
    """Move the clock on half a second at a time until ``holds()`` (the pager waits
    between tries on this clock)."""

    def moved() -> object:
        if holds():
            return True
        clock(system).advance(0.5)
        return False

    return wait_until(moved, timeout, step=0.2)


def pages_out(system: System, until: Callable[[], object]) -> None:
    """Move the clock on until ``until()`` and no page is held for a bundle (its window
    passed), then settle."""
    assert system.server is not None
    pager = system.server.services.pager
    assert move_until(system, lambda: until() and pager.backlog() == 0)
    settle(system)


def sms(system: System, phone: str) -> list[str]:
    return system.twilio.to(phone)


def reply(system: System, phone: str, body: str) -> None:
    response = system.twilio.inbound_sms(
        system.sms_webhook, public_url=system.sms_webhook_public, from_=phone, body=body
    )
    assert response.status_code == 200
    settle(system)


def incident(system: System, incident_id: int) -> Incident:
    return next(i for i in system.incidents() if i.id == incident_id)


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
def test_nobody_acknowledges_for_thirty_minutes(system: System) -> None:
    alert(system)
    settle(system)
    assert [len(sms(system, p)) for p in (RECEPTION, FLOOR, MANAGER)] == [1, 1, 0]
    assert system.twilio.wait_for_calls(lambda calls: len(calls) == 2)

    advance(system, 30)  # step 1: everyone, the manager too
    assert [len(sms(system, p)) for p in (RECEPTION, FLOOR, MANAGER)] == [2, 2, 1]
    for _ in range(29):  # then every 60 s, never silent
        advance(system, 60)
    # 30 minutes: step 0, step 1 at 0:30, and 29 repeats to 29:30.
    assert [len(sms(system, p)) for p in (RECEPTION, FLOOR, MANAGER)] == [31, 31, 30]
    assert len(system.twilio.calls_to(MANAGER)) == 30
    started = system.events("escalation.step_started")
    dues = [datetime.fromisoformat(e.data["due"]) for e in started]
    # The pace of the frozen plan: 30 s to step 1, then exactly every 60 s.
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(dues)] == [30] + [60] * 29
    [frozen] = system.events("escalation.plan_frozen")
    assert frozen.data["plan"]["steps"][0]["to"] == ["reception", "floor"]


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
def test_acknowledgement_stops_paging_and_tells_the_others(system: System) -> None:
    incident_id = alert(system)
    settle(system)
    reply(system, FLOOR, code(system, FLOOR))
    assert incident(system, incident_id).state == "acknowledged"
    assert system.twilio.wait_for(lambda sent: len(sms(system, RECEPTION)) == 2)
    assert sms(system, RECEPTION)[-1] == "Floor is going to Room 1."
    for _ in range(5):
        advance(system, 60)
    assert [len(sms(system, p)) for p in (RECEPTION, FLOOR, MANAGER)] == [2, 2, 0]


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
def test_keypad_one_acknowledges_and_a_completed_call_does_not(system: System) -> None:
    incident_id = alert(system)
    settle(system)
    assert system.twilio.wait_for_calls(lambda calls: len(calls) == 2)
    [to_reception] = system.twilio.calls_to(RECEPTION)
    [to_floor] = system.twilio.calls_to(FLOOR)
    public = system.settings.public_base_url
    # Floor's phone: the call is answered by voicemail and ends ("completed").
    status_url = to_floor.params["StatusCallback"]
    local = status_url.replace(public, system.base_url)
    done = system.twilio.signed_post(
        local, {"CallSid": to_floor.sid, "CallStatus": "completed"}, public_url=status_url
    )
    assert done.status_code == 200
    settle(system)
    assert incident(system, incident_id).state == "open"  # completed is not acknowledged

    # Reception presses 1 during the call.
    gather = to_reception.gather_url
    pressed = system.twilio.signed_post(
        gather.replace(public, system.base_url),
        {"CallSid": to_reception.sid, "Digits": "1"},
        public_url=gather,
    )
    assert pressed.status_code == 200
    assert "You are going to Room 1" in pressed.text
    settle(system)
    found = incident(system, incident_id)
    assert (found.state, found.acknowledged_by) == ("acknowledged", "reception")
    assert [e.data["via"] for e in system.events("incident.acknowledged")] == ["call"]
    assert "Reception gaat naar Room 1." in sms(system, FLOOR)
    # Floor, called back later, presses 1 too: told who is going, not "you are going".
    late = system.twilio.signed_post(
        to_floor.gather_url.replace(public, system.base_url),
        {"CallSid": to_floor.sid + "x", "Digits": "1"},
        public_url=to_floor.gather_url,
    )
    assert "Reception gaat al" in late.text
    assert "U gaat naar" not in late.text


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
def test_invalid_number_moves_on_at_once(system: System) -> None:
    system.twilio.fail(RECEPTION, code=21211, times=10)
    alert(system)
    settle(system)
    # Reception's number is rejected: everyone is paged now, not after 30 s, and the
    # manager (French) is told the number fails.
    assert system.twilio.wait_for(
        lambda sent: any(t.startswith("ALERTE Room 1") for t in sms(system, MANAGER))
    )
    assert system.twilio.wait_for(
        lambda sent: any(t.startswith("PROBLÈME DE TÉLÉPHONE") for t in sms(system, MANAGER))
    )
    [hurried] = system.events("escalation.hurried")
    assert hurried.data == {"step": 1, "reason": "page failed"}
    failed = system.events("page.failed")
    assert {e.data["code"] for e in failed} == {21211}


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
@pytest.mark.settings(twilio_timeout=0.5)
def test_twilio_errors_and_timeouts_are_retried_then_escalated(system: System) -> None:
    system.twilio.fail(RECEPTION, status=500, code=20500, message="Internal error", times=2)
    system.twilio.delays[FLOOR] = 2.0  # every request to Floor hangs past the timeout
    alert(system)
    # Reception's SMS goes through on the third try (the pauses between are seconds).
    assert move_until(system, lambda: len(sms(system, RECEPTION)) >= 1)
    # Floor's never does: after the tries, the next step (due at 30 s) is brought forward.
    assert move_until(system, lambda: system.events("escalation.hurried") != [])
    assert clock(system).now() < START_AT + timedelta(seconds=30)
    assert system.twilio.wait_for(lambda sent: len(sms(system, MANAGER)) >= 1)


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
@pytest.mark.settings(call_bundle_window=2.0)  # calls bundle too; keep the test short
def test_two_rooms_within_two_seconds_make_one_bundled_text(system: System) -> None:
    alert(system, "unit-1")
    alert(system, "unit-2")
    alert(system, "unit-3")
    pages_out(system, lambda: len(sms(system, RECEPTION)) == 2)
    assert system.twilio.wait_for(lambda sent: len(sms(system, RECEPTION)) == 2)
    first, bundle = sms(system, RECEPTION)
    assert first.startswith("ALARM Room 1")
    assert "ALARM Room 2" in bundle
    assert "ALARM Room 3" in bundle
    assert reply_code([bundle], "Room 2") != reply_code([bundle], "Room 3")
    settle(system)  # a third text would be out by now
    assert len(sms(system, RECEPTION)) == 2
    reply(system, RECEPTION, code(system, RECEPTION, "Room 3"))
    assert [i.state for i in system.incidents()] == ["open", "open", "acknowledged"]


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
@pytest.mark.settings(call_bundle_window=2.0)  # the second call is bundled; keep the test short
def test_stop_is_never_a_command_and_managers_are_warned(system: System) -> None:
    incident_id = alert(system)
    settle(system)
    reply(system, RECEPTION, "STOP")
    assert incident(system, incident_id).state == "open"
    assert system.twilio.wait_for(lambda sent: any("STOP" in b for b in sms(system, MANAGER)))
    assert [e.data for e in system.events("staff.opt_out")] == [{"staff": "reception"}]
    # While opted out, reception is paged by call only (SMS would be refused: 21610).
    second = alert(system, "unit-2")
    pages_out(system, lambda: any("Room 2" in c.spoken for c in system.twilio.calls_to(RECEPTION)))
    assert not any("Room 2" in b for b in sms(system, RECEPTION))
    assert any("Room 2" in c.spoken for c in system.twilio.calls_to(RECEPTION))
    reply(system, RECEPTION, "START")
    assert [e.data for e in system.events("staff.opt_in")] == [{"staff": "reception"}]
    assert incident(system, second).state == "open"
    reply(system, RECEPTION, code(system, RECEPTION))
    assert incident(system, incident_id).state == "acknowledged"


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
def test_follow_up_until_resolved_with_an_outcome(system: System) -> None:
    incident_id = alert(system)
    settle(system)
    taken = code(system, RECEPTION)
    reply(system, RECEPTION, taken)
    advance(system, 600)
    # Still not resolved: the acknowledger first ...
    assert sms(system, RECEPTION)[-1].startswith("STILL OPEN: Room 1, taken by Reception at 22:00")
    assert len(sms(system, MANAGER)) == 0
    advance(system, 60)  # ... then everyone
    assert sms(system, MANAGER)[-1].startswith("TOUJOURS OUVERT: Room 1")
    reply(system, RECEPTION, f"{taken}f")
    found = incident(system, incident_id)
    assert (found.state, found.outcome) == ("resolved", "false_alarm")
    assert system.twilio.wait_for(lambda sent: "Room 1 is afgesloten." in sms(system, FLOOR))
    before = len(system.twilio.sent)
    advance(system, 600)
    assert len(system.twilio.sent) == before  # resolved: silence


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
def test_replayed_and_forged_callbacks_change_nothing(system: System) -> None:
    incident_id = alert(system)
    settle(system)
    assert system.twilio.wait_for_calls(lambda calls: len(calls) == 2)
    call = system.twilio.calls_to(RECEPTION)[0]
    public = system.settings.public_base_url
    url = call.params["StatusCallback"]
    params = {"CallSid": call.sid, "CallStatus": "busy"}
    headers = {"I-Twilio-Idempotency-Token": "tok-1"}
    for _ in range(3):
        response = system.twilio.signed_post(
            url.replace(public, system.base_url), params, public_url=url, headers=headers
        )
        assert response.status_code == 200
    assert len(system.events("page.status")) == 1
    forged = system.twilio.signed_post(
        call.gather_url.replace(public, system.base_url),
        {"CallSid": call.sid, "Digits": "1"},
        public_url="https://evil.example/twilio/voice",
    )
    assert forged.status_code == 403
    settle(system)
    assert incident(system, incident_id).state == "open"


DST = {
    "on_duty": [],
    "default": ["floor"],
    "shifts": [{"staff": "reception", "days": ["sat"], "start": "22:00", "end": "06:00"}],
}


@pytest.mark.clock("2026-03-29T00:59:00+00:00")  # 01:59 in Brussels, a minute before DST
@pytest.mark.site(escalation=STEPS, duty=DST)
def test_incident_across_the_daylight_saving_change(system: System) -> None:
    incident_id = alert(system)
    settle(system)
    # The Saturday night shift covers 01:59 (winter time): reception is on duty.
    taken = code(system, RECEPTION)
    assert sms(system, RECEPTION)[0] == f"ALARM Room 1 at 01:59. Reply {taken} if you are going."
    assert sms(system, FLOOR) == []
    advance(system, 30)  # step 1 at 01:59:30, still winter time
    advance(system, 60)  # first repeat at 03:00:30: summer time, an hour "later" on the wall
    assert len(sms(system, MANAGER)) == 2
    reply(system, MANAGER, code(system, MANAGER))
    assert sms(system, RECEPTION)[-1] == "Manager is going to Room 1."
    advance(system, 600)
    assert sms(system, MANAGER)[-1].startswith(
        "TOUJOURS OUVERT: Room 1, pris en charge par Manager à 03:00."
    )
    assert incident(system, incident_id).plan is not None


GAP = {
    "on_duty": [],
    "default": ["manager"],
    "shifts": [{"staff": "reception", "start": "08:00", "end": "22:30"}],
    "gap_warning_minutes": 60,
}


@pytest.mark.clock(START)  # 22:00; reception's shift ends at 22:30 and nobody follows
@pytest.mark.site(escalation=STEPS, duty=GAP)
def test_managers_are_warned_ahead_of_a_gap_and_the_default_group_covers_it(system: System) -> None:
    assert system.server is not None
    warned: set[Any] = set()
    start = system.server.services.rota.check_gap(warned)
    assert start is not None
    assert start == clock(system).now() + timedelta(minutes=30)
    assert system.twilio.wait_for(
        lambda sent: any("Personne n'est de garde de 22:30 à" in b for b in sms(system, MANAGER))
    )
    assert system.server.services.rota.check_gap(warned) is None  # once per gap
    advance(system, 45 * 60)  # 22:45: nobody's shift
    assert system.server.services.rota.check_gap(warned) is None  # still once, inside it
    alert(system)
    settle(system)
    assert sms(system, RECEPTION) == []
    assert any(b.startswith("ALERTE Room 1 à 22:45") for b in sms(system, MANAGER))
    assert [e.type for e in system.events("duty.uncovered")] == ["duty.uncovered"]


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
def test_take_over_pages_only_the_person_who_took_over(system: System) -> None:
    reply(system, MANAGER, "DUTY")
    assert sms(system, MANAGER)[-1].startswith("Vous êtes de garde jusqu'à 06:00.")
    alert(system)
    settle(system)
    assert not any(b.startswith("ALARM") for b in sms(system, RECEPTION))
    assert sms(system, MANAGER)[-1].startswith("ALERTE Room 1")
    [frozen] = system.events("escalation.plan_frozen")
    assert frozen.data["plan"]["steps"][0]["to"] == ["manager"]


@pytest.mark.clock(START)
def test_roster_edits_do_not_change_a_running_incident(system: System) -> None:
    # The plan is frozen at trigger: its recipients are in the incident itself.
    incident_id = alert(system)
    settle(system)  # step 0, which freezes it, follows the unit's "received"
    found = incident(system, incident_id)
    assert found.plan is not None
    assert found.plan["steps"][1]["to"] == ["reception", "floor", "manager"]
    assert found.plan["v"] == 1


LINK_SECRET = "s" * 40
XSS_ROOMS = [{"id": "room-1", "label": "Room 1 <script>x()</script>", "device": "unit-1"}]


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS, rooms=XSS_ROOMS)
@pytest.mark.settings(link_secret=SecretStr(LINK_SECRET))
def test_acknowledgement_link_shows_then_acknowledges_once(system: System) -> None:
    incident_id = alert(system)
    settle(system)
    [page] = sms(system, FLOOR)
    link = page.split()[-1]
    public = f"{system.settings.public_base_url}/ack/"
    assert link.startswith(public)
    local = link.replace(system.settings.public_base_url, system.base_url)

    shown = web.get(local)  # what a link preview in a messaging app does
    assert shown.status_code == 200
    assert shown.headers["Cache-Control"] == "no-store"
    assert "<script>x()" not in shown.text
    assert "&lt;script&gt;" in shown.text
    assert incident(system, incident_id).state == "open"  # looking changes nothing

    done = web.post(local, data={"confirm": "1"})
    assert done.status_code == 200
    assert "You are going" in done.text
    found = incident(system, incident_id)
    assert (found.state, found.acknowledged_by) == ("acknowledged", "floor")
    assert web.post(local, data={"confirm": "1"}).status_code == 410  # single use
    # ... however the used token is spelled (base64 decoding is lenient).
    base, token = local.rsplit("/", 1)
    body, mac = token.split(".")
    for respelled in (f"{local}=", f"{local}===", f"{base}/{body}=.{mac}", f"{local}%0A"):
        assert web.post(respelled, data={"confirm": "1"}).status_code == 410, respelled
    forged = local[:-3] + ("AAA" if not local.endswith("AAA") else "BBB")
    assert web.get(forged).status_code == 410
    assert [e.data["via"] for e in system.events("incident.acknowledged")] == ["link"]


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
def test_console_acknowledges_and_shows_the_backlog(system: System) -> None:
    incident_id = alert(system)
    settle(system)
    auth = system.headers("manager")
    state = web.get(f"{system.api}/paging", headers=auth).json()
    assert state["send_backlog"] == 0
    assert state["jobs_pending"] == 1  # step 1 is waiting
    assert web.get(f"{system.api}/paging").status_code == 401
    done = web.post(
        f"{system.api}/incidents/{incident_id}/acknowledge",
        json={"staff_id": "manager"},
        headers=auth,
    )
    assert done.json()["acknowledged_by"] == "manager"
    settle(system)
    state = web.get(f"{system.api}/paging", headers=auth).json()
    assert state["jobs_pending"] == 1  # now the follow-up, in case it is never resolved
    assert "Manager is going to Room 1." in sms(system, RECEPTION)


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
@pytest.mark.settings(offline_grace=0.0, offline_silence=3600.0)
def test_unit_offline_pages_managers_until_acknowledged(system: System) -> None:
    assert system.server is not None
    # Units never seen are offline: one technical incident per unit, managers only.
    assert system.twilio.wait_for(lambda sent: len(sms(system, MANAGER)) >= 1)
    pages_out(system, lambda: True)  # the other two units' pages are bundled
    technical = [i for i in system.incidents() if i.kind == "unit_offline"]
    assert len(technical) == 3
    count = len(sms(system, MANAGER))
    clock(system).advance(300)
    pages_out(system, lambda: len(sms(system, MANAGER)) > count)  # again, until someone takes it
    assert sms(system, RECEPTION) == []
    reply(system, MANAGER, code(system, MANAGER, None))
    acked = [i for i in system.incidents() if i.state == "acknowledged"]
    assert len(acked) == 1


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
def test_a_reply_that_failed_is_acted_on_when_twilio_retries(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    incident_id = alert(system)
    settle(system)
    assert system.server is not None
    services = system.server.services
    real = services.sms.handle
    calls: list[str] = []

    def flaky(*, phone: str, body: str, sid: str) -> None:
        calls.append(body)
        if len(calls) == 1:
            raise RuntimeError("database went away")
        real(phone=phone, body=body, sid=sid)

    monkeypatch.setattr(services.sms, "handle", flaky)
    for expected in (500, 200):  # Twilio retries the same message after an error
        response = system.twilio.inbound_sms(
            system.sms_webhook,
            public_url=system.sms_webhook_public,
            from_=RECEPTION,
            body=code(system, RECEPTION),
            sid="SM" + "b" * 32,
        )
        assert response.status_code == expected
    settle(system)
    assert incident(system, incident_id).state == "acknowledged"


def publish(system: System, alert_: Alert) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=alert_.device_id)
    client.username_pw_set(alert_.device_id, system.users[alert_.device_id])
    client.connect("127.0.0.1", system.mqtt_port)
    client.loop_start()
    try:
        client.publish(alert_topic(alert_.device_id), alert_.to_json(), qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
@pytest.mark.settings(sms_bundle_window=0.0, call_bundle_window=0.0)
def test_a_press_after_resolution_reopens_with_a_fresh_reply_code(system: System) -> None:
    first = pressed(system)
    take_and_close(system)  # the unit never heard it
    other = alert(system, "unit-2")
    settle(system)
    assert sms(system, RECEPTION)[-1].startswith("ALARM Room 2")
    room_2 = code(system, RECEPTION, "Room 2")

    advance(system, 120)
    publish(system, dataclasses.replace(first, presses=2))  # pressed again in Room 1
    assert wait_until(lambda: any("ALARM Room 1 at 22:02" in b for b in sms(system, RECEPTION)))
    settle(system)
    reopened = next(b for b in sms(system, RECEPTION) if "ALARM Room 1 at 22:02" in b)
    again = reply_code([reopened])
    assert again != room_2  # a fresh code, never one of an open incident
    assert [e.data["round"] for e in system.events("incident.reopened")] == [1]
    reply(system, RECEPTION, again)
    states = {i.id: i.state for i in system.incidents()}
    assert states[other] == "open"
    assert list(states.values()).count("acknowledged") == 1


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
@pytest.mark.settings(
    sms_bundle_window=0.0, call_bundle_window=0.0, link_secret=SecretStr(LINK_SECRET)
)
def test_a_link_from_before_a_reopen_does_not_acknowledge_the_new_alarm(
    system: System,
) -> None:
    first = pressed(system)
    [old_page] = sms(system, FLOOR)
    old_link = old_page.split()[-1].replace(system.settings.public_base_url, system.base_url)
    take_and_close(system)  # the unit never heard it
    advance(system, 120)
    publish(system, dataclasses.replace(first, presses=2))  # pressed again: reopened

    def linked() -> list[str]:
        return [t for t in sms(system, FLOOR) if "/ack/" in t]

    assert wait_until(lambda: len(linked()) == 2)
    settle(system)
    # The floor manager's unused link of the first round stops nothing now.
    assert web.post(old_link, data={"confirm": "1"}).status_code == 410
    [found] = system.incidents()
    assert (found.state, found.round) == ("open", 1)
    # The new round's page carries its own link, which works.
    new_link = linked()[-1].split()[-1]
    local = new_link.replace(system.settings.public_base_url, system.base_url)
    assert "You are going" in web.post(local, data={"confirm": "1"}).text
    assert system.incidents()[0].state == "acknowledged"


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
def test_after_an_outage_missed_repeats_are_not_fired_in_a_burst(system: System) -> None:
    alert(system)
    settle(system)
    assert system.server is not None
    scheduler = system.server.services.scheduler
    scheduler.stop()  # the server stalls for half an hour
    clock(system).advance(1800)
    scheduler.start()
    settle(system)
    # One catch-up page (step 1, everyone), not 30 missed repeats at once ...
    assert len(sms(system, MANAGER)) == 1
    assert [e.data["skipped"] for e in system.events("escalation.repeats_skipped")] == [29]
    advance(system, 60)  # ... and then the usual pace again
    assert len(sms(system, MANAGER)) == 2
    scheduler.stop()


def pressed(system: System) -> Alert:
    """Room 1's unit sends its first alert; returns it once its pages are out."""
    first = Alert(
        device_id="unit-1", alert_id=new_alert_id(), seq=1, pressed_at=clock(system).now()
    )
    publish(system, first)
    assert wait_until(lambda: len(system.incidents()) == 1)
    settle(system)
    return first


def take_and_close(system: System) -> None:
    """Reception takes Room 1's alarm by its code, then closes it as handled."""
    reply(system, RECEPTION, code(system, RECEPTION))
    reply(system, RECEPTION, code(system, RECEPTION) + "g")


def code(system: System, phone: str, room: str | None = "Room 1") -> str:
    """The reply code in the latest page about ``room`` that ``phone`` received."""
    return reply_code(sms(system, phone), room)


class Unit:
    """A plain MQTT client logged in as ``device``: publishes alerts, collects its feedback."""

    def __init__(self, system: System, device: str) -> None:
        self.raw: list[bytes] = []
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device)
        self._client.username_pw_set(device, system.users[device])
        self._client.on_message = lambda c, u, msg: self.raw.append(bytes(msg.payload))
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *args: subscribed.set()
        self._client.connect("127.0.0.1", system.mqtt_port)
        self._client.subscribe(feedback_topic(device), qos=1)
        self._client.loop_start()
        assert subscribed.wait(5)

    @property
    def seen(self) -> list[Feedback]:
        return [Feedback.from_json(payload) for payload in self.raw]

    def send(self, alert_: Alert) -> None:
        self._client.publish(
            alert_topic(alert_.device_id), alert_.to_json(), qos=1
        ).wait_for_publish(5)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
def test_an_alert_id_from_another_unit_is_refused_and_never_touches_that_room(
    system: System,
) -> None:
    first = pressed(system)
    texts = len(system.twilio.sent)
    unit_2 = Unit(system, "unit-2")
    try:
        # Unit 2 sends Room 1's alert id (a cloned memory card, or a forged unit).
        unit_2.send(dataclasses.replace(first, device_id="unit-2", presses=2))
        assert wait_until(lambda: len(unit_2.seen) == 1)
        [refused] = system.events("alert.refused")
        assert refused.data == {"alert_id": first.alert_id, "device": "unit-2", "seq": 1}
        [room_1] = system.incidents()
        assert (room_1.device_id, room_1.presses, room_1.state) == ("unit-1", 1, "open")
        assert system.events("alert.re_pressed") == []
        # Unit 2 is told the alert is over, so it stops resending it (never "received").
        [told] = unit_2.seen
        assert (told.alert_id, told.state, told.incident) == (first.alert_id, "resolved", 0)
        settle(system)
        assert len(system.twilio.sent) == texts  # nobody texted "Room 2: pressed again"

        reply(system, RECEPTION, code(system, RECEPTION))
        reply(system, RECEPTION, code(system, RECEPTION) + "g")
        assert system.incidents()[0].state == "resolved"
        texts = len(system.twilio.sent)
        unit_2.send(dataclasses.replace(first, device_id="unit-2", presses=3))
        assert wait_until(lambda: len(unit_2.seen) == 2)
        settle(system)
    finally:
        unit_2.close()
    # Resolved Room 1 is not reopened by unit 2; the refusal is logged once.
    assert system.incidents()[0].state == "resolved"
    assert system.events("incident.reopened") == []
    assert len(system.events("alert.refused")) == 1
    assert len(system.twilio.sent) == texts


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
def test_a_reply_without_the_code_acknowledges_nothing_and_says_what_to_send(
    system: System,
) -> None:
    incident_id = alert(system)
    settle(system)
    taken = code(system, RECEPTION)
    assert len(taken) == 3
    # "a" from reception's number: anyone can send that with a spoofed sender.
    reply(system, RECEPTION, "a")
    assert incident(system, incident_id).state == "open"
    assert system.twilio.wait_for(
        lambda sent: (
            sms(system, RECEPTION)[-1]
            == f"Not done: your reply needs the alarm's code: {taken} (Room 1)."
        )
    )
    assert system.events("incident.acknowledged") == []
    reply(system, RECEPTION, f"a {taken}")
    found = incident(system, incident_id)
    assert (found.state, found.acknowledged_by) == ("acknowledged", "reception")


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
def test_wrong_codes_are_limited_so_a_guesser_cannot_try_them_all(system: System) -> None:
    incident_id = alert(system)
    settle(system)
    right = int(code(system, FLOOR))
    wrong = [100 + (right - 100 + k) % 900 for k in range(1, 6)]
    for guess in wrong:
        reply(system, FLOOR, str(guess))
    assert incident(system, incident_id).state == "open"
    assert system.twilio.wait_for(
        lambda sent: sms(system, FLOOR)[-1].startswith("Te veel foute codes")
    )
    assert "codes worden geweigerd tot 22:15" in sms(system, FLOOR)[-1]
    # Five wrong codes: even the right one is refused from that number for a while ...
    reply(system, FLOOR, str(right))
    assert incident(system, incident_id).state == "open"
    # ... and accepted again once the window has passed (the call's key 1 works meanwhile).
    advance(system, 15 * 60)
    reply(system, FLOOR, str(right))
    assert incident(system, incident_id).state == "acknowledged"


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
def test_duty_take_over_by_sms_tells_the_people_it_replaces(system: System) -> None:
    reply(system, MANAGER, "DUTY")
    assert system.twilio.wait_for(
        lambda sent: len(sms(system, RECEPTION)) == 1 and len(sms(system, FLOOR)) == 1
    )
    assert sms(system, RECEPTION) == [
        (
            "Manager has taken over duty until 06:00: you are not on duty until then. "
            "Reply DUTY if you should be."
        )
    ]
    assert sms(system, FLOOR)[0].startswith("Manager heeft de dienst overgenomen tot 06:00")
    assert sms(system, MANAGER)[-1].startswith("Vous êtes de garde jusqu'à 06:00.")
    reply(system, MANAGER, "DUTY")  # again: nobody else is replaced this time
    assert len(sms(system, RECEPTION)) == 1


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
def test_button_mashing_sends_news_at_most_every_thirty_seconds(system: System) -> None:
    first = Alert(
        device_id="unit-1", alert_id=new_alert_id(), seq=1, pressed_at=clock(system).now()
    )
    unit = Unit(system, "unit-1")
    try:
        unit.send(first)
        assert wait_until(lambda: len(system.incidents()) == 1)
        settle(system)
        for presses in range(2, 32):  # 30 re-presses in a burst
            unit.send(dataclasses.replace(first, presses=presses))
        assert wait_until(lambda: system.incidents()[0].presses == 31)
        settle(system)
    finally:
        unit.close()
    assert len(system.events("alert.re_pressed")) == 30  # every press is recorded

    def news(phone: str) -> list[str]:
        return [b for b in sms(system, phone) if "pressed again" in b or "opnieuw ingedrukt" in b]

    # The first re-press is news at once; the rest wait for the window to end ...
    assert system.twilio.wait_for(lambda sent: len(news(RECEPTION)) == 1 and len(news(FLOOR)) == 1)
    assert len(sms(system, RECEPTION)) == 2  # the page and one news, not 31 texts
    advance(system, 29)
    assert len(news(RECEPTION)) == 1
    advance(system, 1)  # ... and then go out once, with the count as it is now.
    assert system.twilio.wait_for(lambda sent: len(news(RECEPTION)) == 2 and len(news(FLOOR)) == 2)
    assert news(RECEPTION)[-1] == "Room 1: the button was pressed again (31 times)."
    assert news(FLOOR)[-1] == "Room 1: de knop werd opnieuw ingedrukt (31 keer)."
    advance(system, 60)
    assert len(news(RECEPTION)) == 2  # nothing new to tell


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
def test_re_press_news_twilio_refused_is_sent_again_later(system: System) -> None:
    first = pressed(system)
    system.twilio.fail(RECEPTION, code=21611, message="queue full", times=1)
    publish(system, dataclasses.replace(first, presses=2))
    assert wait_until(lambda: system.incidents()[0].presses == 2)
    settle(system)
    # Refused: reception was not told (floor was) ...
    assert wait_until(lambda: len(system.events("message.failed")) == 1)
    assert not [t for t in sms(system, RECEPTION) if "again" in t]
    advance(system, 30)
    # ... so the news goes again, once, when the job runs.
    assert system.twilio.wait_for(
        lambda sent: "Room 1: the button was pressed again (2 times)." in sms(system, RECEPTION)
    )
    advance(system, 60)
    assert [t for t in system.twilio.to(RECEPTION) if "again" in t] == [
        "Room 1: the button was pressed again (2 times)."
    ]


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
def test_an_alert_id_from_another_unit_over_https_is_answered_resolved(system: System) -> None:
    first = pressed(system)
    forged = dataclasses.replace(first, device_id="unit-2", presses=5)
    answer = web.post(
        f"{system.api}/devices/unit-2/alerts",
        content=forged.to_json(),
        headers={"Authorization": f"Bearer {DEVICE_TOKENS['unit-2']}"},
    )
    # The unit's HTTPS path takes the answer as feedback: it stops resending.
    assert answer.status_code == 200
    told = Feedback.from_json(answer.content)
    assert (told.alert_id, told.state, told.incident, told.presses) == (
        first.alert_id,
        "resolved",
        0,
        5,
    )
    [room_1] = system.incidents()
    assert (room_1.presses, room_1.state) == (1, "open")
    assert [e.data["device"] for e in system.events("alert.refused")] == ["unit-2"]


STORM_ROOMS = 30
SMS_ONLY = {"steps": [{"after": 0, "who": "on_duty", "channels": ["sms"]}], "repeat_every": 600}


def codes_of(system: System, staff_id: str) -> dict[int, int]:
    """incident -> the reply code ``staff_id`` was paged with (read where the phone got it)."""
    assert system.server is not None
    with system.server.services.sessions() as s:
        return {
            p.incident_id: p.reply_code
            for p in s.scalars(select(Page).where(Page.staff_id == staff_id).order_by(Page.id))
        }


@pytest.mark.clock(START)
@pytest.mark.site(
    escalation=SMS_ONLY,
    rooms=[
        {
            "id": f"room-{i}",
            "label": f"Room {i}",
            "device": f"unit-{i}",
            "device_token_sha256": hashlib.sha256(b"unused").hexdigest(),
        }
        for i in range(1, STORM_ROOMS + 1)
    ],
)
# The rate is another test's subject: 120 pages at one moment of the hand-moved clock
# would leave the replies' texts waiting for Twilio's rate until it moves.
@pytest.mark.settings(
    sms_bundle_window=0.0,
    twilio_sms_per_second=1000.0,
    twilio_calls_per_second=1000.0,
    twilio_burst=1000,
)
def test_a_storm_of_spoofed_guesses_from_several_numbers_takes_no_alarm(
    system: System,
) -> None:
    assert system.server is not None
    system.twilio.sender_rate = 0.0
    for i in range(1, STORM_ROOMS + 1):
        system.server.services.alerts.handle(
            Alert(device_id=f"unit-{i}", alert_id=new_alert_id(), seq=1, pressed_at=START_AT)
        )
    pages_out(system, lambda: True)  # the calls are bundled
    mine = {phone: set(codes_of(system, who).values()) for phone, who in STAFF}
    # A spoofer sends wrong codes from every staff number, each under its own limit ...
    for phone, n in ((RECEPTION, 4), (FLOOR, 4), (MANAGER, 2)):
        wrong = [c for c in range(100, 1000) if c not in mine[phone]][:n]
        for guess in wrong:
            reply(system, phone, f"{guess}g")
    # ... and then even right codes (as a lucky guess would be) are not acted on.
    for phone in (RECEPTION, FLOOR):
        right = sorted(mine[phone])
        reply(system, phone, f"{right[0]}")
        reply(system, phone, f"{right[1]}g")
    assert {i.state for i in system.incidents()} == {"open"}
    assert system.events("incident.acknowledged") == []
    assert system.events("incident.resolved") == []
    assert system.twilio.wait_for(
        lambda sent: sms(system, RECEPTION)[-1].startswith("Not done: codes sent by SMS")
    )
    assert "press 1 in the call or use the link" in sms(system, RECEPTION)[-1]


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
def test_a_code_with_g_or_f_never_closes_an_open_alarm(system: System) -> None:
    incident_id = alert(system)
    settle(system)
    taken = code(system, RECEPTION)
    reply(system, RECEPTION, f"{taken}g")
    assert incident(system, incident_id).state == "open"
    assert system.events("incident.resolved") == []
    assert system.twilio.wait_for(
        lambda sent: (
            sms(system, RECEPTION)[-1]
            == f"Not done: Room 1 is not taken yet. Reply {taken} if you are going, "
            f"then {taken}g (handled) or {taken}f (false alarm) to close it."
        )
    )
    reply(system, RECEPTION, taken)
    assert incident(system, incident_id).state == "acknowledged"
    # Floor did not take it (nor was asked by a follow-up): their code does not close it.
    reply(system, FLOOR, code(system, FLOOR) + "f")
    assert incident(system, incident_id).state == "acknowledged"
    reply(system, RECEPTION, f"{taken}g")
    found = incident(system, incident_id)
    assert (found.state, found.outcome) == ("resolved", "genuine")


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
def test_a_locked_phone_sending_a_right_code_is_told_once_why_nothing_happens(
    system: System,
) -> None:
    incident_id = alert(system)
    settle(system)
    right = int(code(system, FLOOR))
    wrong = [100 + (right - 100 + k) % 900 for k in range(1, 6)]
    for guess in wrong:
        reply(system, FLOOR, str(guess))
    reply(system, FLOOR, "hello")  # one more not understood: past the limit on answers
    before = len(sms(system, FLOOR))
    # The real person, locked out by the guesser, sends the right code: told once why.
    reply(system, FLOOR, str(right))
    assert system.twilio.wait_for(lambda sent: len(sms(system, FLOOR)) == before + 1)
    assert sms(system, FLOOR)[-1].startswith("Te veel foute codes")
    reply(system, FLOOR, str(right))  # again: no more answers for this lock (no loop)
    settle(system)
    assert len(sms(system, FLOOR)) == before + 1
    assert incident(system, incident_id).state == "open"


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
def test_someone_a_follow_up_asks_to_close_can_close_by_code(system: System) -> None:
    incident_id = alert(system)
    settle(system)
    reply(system, RECEPTION, code(system, RECEPTION))
    # Before any follow-up, Floor's code does not close what Reception took ...
    theirs = code(system, FLOOR)
    reply(system, FLOOR, f"{theirs}g")
    assert incident(system, incident_id).state == "acknowledged"
    assert system.twilio.wait_for(
        lambda sent: (
            sms(system, FLOOR)[-1]
            == "Niet gedaan: Room 1 is opgenomen door Reception, die het afsluit."
        )
    )
    advance(system, 600)
    advance(system, 60)  # ... the follow-up reaches everyone, Floor too ...
    assert sms(system, FLOOR)[-1].startswith("NOG OPEN: Room 1")
    assert code(system, FLOOR) == theirs  # the same code all round
    reply(system, FLOOR, f"{theirs}f")  # ... and asks them to close it.
    found = incident(system, incident_id)
    assert (found.state, found.outcome) == ("resolved", "false_alarm")
    [closed] = system.events("incident.resolved")
    assert closed.data["staff"] == "floor"


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
@pytest.mark.settings(sms_bundle_window=0.0, call_bundle_window=0.0)
def test_a_late_code_from_before_a_reopen_does_not_take_the_new_alarm(system: System) -> None:
    first = pressed(system)
    old = code(system, FLOOR)  # Floor was paged too, and answers late
    take_and_close(system)
    advance(system, 120)
    publish(system, dataclasses.replace(first, presses=2))  # pressed again: reopened
    assert wait_until(lambda: any("ALARM Room 1 om 22:02" in b for b in sms(system, FLOOR)))
    settle(system)
    assert code(system, FLOOR) != old
    reply(system, FLOOR, old)  # meant for the alarm that was closed
    assert system.incidents()[0].state == "open"
    reply(system, FLOOR, code(system, FLOOR))
    assert system.incidents()[0].state == "acknowledged"


@pytest.mark.clock(START)
@pytest.mark.site(escalation={**STEPS, "follow_up_after": 300})
def test_taken_before_step_0_ran_pages_nobody_and_still_follows_up(system: System) -> None:
    """Taken from the console between the unit's "received" and step 0 (which follows
    in a transaction of its own, seconds later in a storm): nobody is paged, and the
    follow-up still comes, at the site's time."""
    assert system.server is not None
    services = system.server.services
    site = services.book()
    room = site.room_for_device("unit-1")
    assert room is not None
    now = clock(system).now()
    pressed = Alert(device_id="unit-1", alert_id=new_alert_id(), seq=1, pressed_at=now)
    with services.sessions.begin() as s:
        recorded = incidents.record_alert(
            session=s, site=site, room=room, alert=pressed, now=now, defer=True
        )
        assert recorded.deferred
        taken = incidents.acknowledge(
            session=s, incident=recorded.incident, staff_id="reception", via="console", now=now
        )
        assert taken
        incident_id = recorded.incident.id
    services.scheduler.wake()
    settle(system)
    kinds = [e.type for e in system.events() if e.incident_id == incident_id]
    assert "escalation.plan_frozen" in kinds, kinds
    assert "escalation.step_started" not in kinds, kinds
    assert [sms(system, p) for p in (RECEPTION, FLOOR, MANAGER)] == [[], [], []]
    advance(system, 290)
    assert sms(system, RECEPTION) == []
    advance(system, 15)
    assert sms(system, RECEPTION)[-1].startswith("STILL OPEN: Room 1, taken by Reception at 22:00")
