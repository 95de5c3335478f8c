"""Escalation: only a human acknowledgement stops the paging.

Real Mosquitto, real twilio library against the fake Twilio, SQLite and
PostgreSQL; the server runs on a clock the test moves by hand, so thirty
minutes of escalation take seconds while everything else is real.
"""

from __future__ import annotations

import dataclasses
import itertools
from datetime import datetime, timedelta
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr

from panicbutton.wire import Alert, alert_topic, new_alert_id
from server.clock import ManualClock
from server.models import Incident
from tests.harness import FLOOR, MANAGER, RECEPTION, System, wait_until

START = "2026-11-27T21:00:00+00:00"  # 22:00 in Brussels
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
        client.loop_stop()
        client.disconnect()
    return system.incidents()[-1].id


def settle(system: System) -> None:
    """Wait until every job due by the hand-moved clock has run and its pages are out."""
    system.wait_idle(timeout=20)


def advance(system: System, seconds: float) -> None:
    clock(system).advance(seconds)
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
    reply(system, FLOOR, "1")
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
    # Reception's number is rejected: everyone is paged now, not after 30 s.
    assert system.twilio.wait_for(lambda sent: len(sms(system, MANAGER)) == 1)
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
    # Reception's SMS goes through on the third try.
    assert system.twilio.wait_for(lambda sent: len(sms(system, RECEPTION)) >= 1, timeout=15)
    # Floor's never does: after the tries, the next step is brought forward.
    assert wait_until(lambda: system.events("escalation.hurried") != [], timeout=20)
    assert system.twilio.wait_for(lambda sent: len(sms(system, MANAGER)) >= 1, timeout=15)


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
@pytest.mark.settings(call_bundle_window=2.0)  # calls bundle too; keep the test short
def test_two_rooms_within_two_seconds_make_one_bundled_text(system: System) -> None:
    alert(system, "unit-1")
    alert(system, "unit-2")
    alert(system, "unit-3")
    settle(system)
    assert system.twilio.wait_for(lambda sent: len(sms(system, RECEPTION)) == 2, timeout=10)
    first, bundle = sms(system, RECEPTION)
    assert first.startswith("ALARM Room 1")
    assert "ALARM Room 2" in bundle
    assert "ALARM Room 3" in bundle
    assert "Reply 2" in bundle
    assert "Reply 3" in bundle
    settle(system)  # a third text would be out by now
    assert len(sms(system, RECEPTION)) == 2
    reply(system, RECEPTION, "3")
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
    settle(system)
    assert not any("Room 2" in b for b in sms(system, RECEPTION))
    assert any("Room 2" in c.spoken for c in system.twilio.calls_to(RECEPTION))
    reply(system, RECEPTION, "START")
    assert [e.data for e in system.events("staff.opt_in")] == [{"staff": "reception"}]
    assert incident(system, second).state == "open"
    reply(system, RECEPTION, "1")
    assert incident(system, incident_id).state == "acknowledged"


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
def test_follow_up_until_resolved_with_an_outcome(system: System) -> None:
    incident_id = alert(system)
    settle(system)
    reply(system, RECEPTION, "1")
    advance(system, 600)
    # Still not resolved: the acknowledger first ...
    assert sms(system, RECEPTION)[-1].startswith("STILL OPEN: Room 1, taken by Reception at 22:00")
    assert len(sms(system, MANAGER)) == 0
    advance(system, 60)  # ... then everyone
    assert sms(system, MANAGER)[-1].startswith("TOUJOURS OUVERT: Room 1")
    reply(system, RECEPTION, "1f")
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
    assert sms(system, RECEPTION)[0] == "ALARM Room 1 at 01:59. Reply 1 if you are going."
    assert sms(system, FLOOR) == []
    advance(system, 30)  # step 1 at 01:59:30, still winter time
    advance(system, 60)  # first repeat at 03:00:30: summer time, an hour "later" on the wall
    assert len(sms(system, MANAGER)) == 2
    reply(system, MANAGER, "1")
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
    start = system.server.runtime.check_duty_gap(warned)
    assert start is not None
    assert start == clock(system).now() + timedelta(minutes=30)
    assert system.twilio.wait_for(
        lambda sent: any("Personne n'est de garde de 22:30 à" in b for b in sms(system, MANAGER))
    )
    assert system.server.runtime.check_duty_gap(warned) is None  # once per gap
    advance(system, 45 * 60)  # 22:45: nobody's shift
    assert system.server.runtime.check_duty_gap(warned) is None  # still once, inside it
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
    assert sms(system, RECEPTION) == []
    assert sms(system, MANAGER)[-1].startswith("ALERTE Room 1")
    [frozen] = system.events("escalation.plan_frozen")
    assert frozen.data["plan"]["steps"][0]["to"] == ["manager"]


@pytest.mark.clock(START)
def test_roster_edits_do_not_change_a_running_incident(system: System) -> None:
    # The plan is frozen at trigger: its recipients are in the incident itself.
    incident_id = alert(system)
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

    shown = httpx.get(local)  # what a link preview in a messaging app does
    assert shown.status_code == 200
    assert shown.headers["Cache-Control"] == "no-store"
    assert "<script>x()" not in shown.text
    assert "&lt;script&gt;" in shown.text
    assert incident(system, incident_id).state == "open"  # looking changes nothing

    done = httpx.post(local, data={"confirm": "1"})
    assert done.status_code == 200
    assert "You are going" in done.text
    found = incident(system, incident_id)
    assert (found.state, found.acknowledged_by) == ("acknowledged", "floor")
    assert httpx.post(local, data={"confirm": "1"}).status_code == 410  # single use
    forged = local[:-3] + ("AAA" if not local.endswith("AAA") else "BBB")
    assert httpx.get(forged).status_code == 410
    assert [e.data["via"] for e in system.events("incident.acknowledged")] == ["link"]


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
def test_console_acknowledges_and_shows_the_backlog(system: System) -> None:
    incident_id = alert(system)
    settle(system)
    token = system.settings.api_token.get_secret_value()
    auth = {"Authorization": f"Bearer {token}"}
    state = httpx.get(f"{system.api}/paging", headers=auth).json()
    assert state["send_backlog"] == 0
    assert state["jobs_pending"] == 1  # step 1 is waiting
    assert httpx.get(f"{system.api}/paging").status_code == 401
    done = httpx.post(
        f"{system.api}/incidents/{incident_id}/acknowledge",
        json={"staff_id": "manager"},
        headers=auth,
    )
    assert done.json()["acknowledged_by"] == "manager"
    settle(system)
    state = httpx.get(f"{system.api}/paging", headers=auth).json()
    assert state["jobs_pending"] == 1  # now the follow-up, in case it is never resolved
    assert "Manager is going to Room 1." in sms(system, RECEPTION)


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
@pytest.mark.settings(offline_grace=0.0, offline_silence=3600.0)
def test_unit_offline_pages_managers_until_acknowledged(system: System) -> None:
    assert system.server is not None
    # Units never seen are offline: one technical incident per unit, managers only.
    assert system.twilio.wait_for(lambda sent: len(sms(system, MANAGER)) >= 1, timeout=15)
    settle(system)
    technical = [i for i in system.incidents() if i.kind == "unit_offline"]
    assert len(technical) == 3
    count = len(sms(system, MANAGER))
    advance(system, 300)
    assert len(sms(system, MANAGER)) > count  # again, until someone takes it
    assert sms(system, RECEPTION) == []
    reply(system, MANAGER, "a")
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
    runtime = system.server.runtime
    real = runtime.handle_sms
    calls: list[str] = []

    def flaky(*, phone: str, body: str) -> None:
        calls.append(body)
        if len(calls) == 1:
            raise RuntimeError("database went away")
        real(phone=phone, body=body)

    monkeypatch.setattr(runtime, "handle_sms", flaky)
    for expected in (500, 200):  # Twilio retries the same message after an error
        response = system.twilio.inbound_sms(
            system.sms_webhook,
            public_url=system.sms_webhook_public,
            from_=RECEPTION,
            body="1",
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
        client.loop_stop()
        client.disconnect()


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
@pytest.mark.settings(sms_bundle_window=0.0, call_bundle_window=0.0)
def test_a_press_after_resolution_reopens_with_a_fresh_reply_code(system: System) -> None:
    first = Alert(
        device_id="unit-1", alert_id=new_alert_id(), seq=1, pressed_at=clock(system).now()
    )
    publish(system, first)
    assert wait_until(lambda: len(system.incidents()) == 1)
    settle(system)
    reply(system, RECEPTION, "1g")  # closed by staff; the unit never heard it
    other = alert(system, "unit-2")  # Room 2 now takes reception's code 1
    settle(system)
    assert sms(system, RECEPTION)[-1].startswith("ALARM Room 2")
    assert "Reply 1" in sms(system, RECEPTION)[-1]

    advance(system, 120)
    publish(system, dataclasses.replace(first, presses=2))  # pressed again in Room 1
    assert wait_until(lambda: any("ALARM Room 1 at 22:02" in b for b in sms(system, RECEPTION)))
    settle(system)
    reopened = next(b for b in sms(system, RECEPTION) if "ALARM Room 1 at 22:02" in b)
    assert "Reply 2" in reopened  # not 1: that is Room 2's now
    assert [e.data["round"] for e in system.events("incident.reopened")] == [1]
    reply(system, RECEPTION, "2")
    states = {i.id: i.state for i in system.incidents()}
    assert states[other] == "open"
    assert list(states.values()).count("acknowledged") == 1


@pytest.mark.clock(START)
@pytest.mark.site(escalation=STEPS)
def test_after_an_outage_missed_repeats_are_not_fired_in_a_burst(system: System) -> None:
    alert(system)
    settle(system)
    assert system.server is not None
    system.server.runtime.scheduler.stop()  # the server stalls for half an hour
    clock(system).advance(1800)
    system.server.runtime.scheduler = type(system.server.runtime.scheduler)(
        sessions=system.server.runtime.sessions,
        clock=clock(system),
        run_job=system.server.runtime._run_job,
    )
    system.server.runtime.scheduler.start()
    settle(system)
    # One catch-up page (step 1, everyone), not 30 missed repeats at once ...
    assert len(sms(system, MANAGER)) == 1
    assert [e.data["skipped"] for e in system.events("escalation.repeats_skipped")] == [29]
    advance(system, 60)  # ... and then the usual pace again
    assert len(sms(system, MANAGER)) == 2
    system.server.runtime.scheduler.stop()
