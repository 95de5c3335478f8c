"""One press reaches the phone of the person on duty, and the reply reaches the room.

Real Mosquitto (passwords + ACL), real paho clients, the real twilio library
against a fake Twilio on loopback, gpiozero's MockFactory, SQLite and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select

from device.indicator import Light
from panicbutton.wire import Alert, alert_topic, new_alert_id, now_utc
from server.models import Incident, LogEntry, Page
from tests import web
from tests.harness import FLOOR, RECEPTION, System, reply_code, wait_until


def incidents(system: System) -> list[Incident]:
    assert system.server is not None
    with system.server.services.sessions() as s:
        return list(s.scalars(select(Incident).order_by(Incident.id)))


@contextlib.contextmanager
def unit_client(system: System, device_id: str) -> Iterator[mqtt.Client]:
    """A plain MQTT client logged in as room unit ``device_id``, its loop running."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id)
    client.username_pw_set(device_id, system.users[device_id])
    client.connect("127.0.0.1", system.mqtt_port)
    client.loop_start()
    try:
        yield client
    finally:
        client.disconnect()  # first: the loop then ends at once, not after its 1 s select
        client.loop_stop()


def test_press_pages_duty_and_reply_shows_help_coming(system: System) -> None:
    room = system.room("unit-1")
    assert wait_until(lambda: room.light is Light.ARMED), room.lights

    room.press()

    # The incident is committed and the room unit is told it was received.
    assert wait_until(lambda: room.light is Light.RECEIVED), room.lights
    [incident] = incidents(system)
    assert (incident.room_id, incident.state) == ("room-1", "open")
    # Both people on duty get an SMS naming the room, each in their language.
    assert system.twilio.wait_for(lambda sent: len(sent) == 2)
    [to_reception] = system.twilio.to(RECEPTION)
    [to_floor] = system.twilio.to(FLOOR)
    assert to_reception.startswith("ALARM Room 1 at ")
    taken = reply_code([to_reception])
    assert to_reception.endswith(f"Reply {taken} if you are going.")
    assert to_floor.startswith("ALARM Room 1 om ")
    assert to_floor.endswith(f"Antwoord {reply_code([to_floor])} als u gaat.")
    assert system.twilio.sent[0].params["ValidityPeriod"] == "300"

    reply = system.twilio.inbound_sms(
        system.sms_webhook, public_url=system.sms_webhook_public, from_=RECEPTION, body=taken
    )
    assert reply.status_code == 200

    # The room unit shows "help is coming": the LED is steadily on.
    assert wait_until(lambda: room.light is Light.HELP_COMING), room.lights
    assert room.led_pin.state == 1
    time.sleep(0.3)
    assert room.led_pin.state == 1, "help-coming light must be steady, not blinking"
    [incident] = incidents(system)
    assert (incident.state, incident.acknowledged_by) == ("acknowledged", "reception")
    # The other person on duty is told who is going; the acknowledger gets a confirmation.
    assert system.twilio.wait_for(lambda sent: len(sent) == 4)
    assert system.twilio.to(FLOOR)[-1] == "Reception gaat naar Room 1."
    assert "You are going to Room 1" in system.twilio.to(RECEPTION)[-1]
    # Each change is in the log, with ids only.
    assert system.server is not None
    with system.server.services.sessions() as s:
        types = list(
            s.scalars(
                select(LogEntry.type)
                .where(LogEntry.incident_id == incident.id)
                .order_by(LogEntry.n)
            )
        )
        logged = " ".join(str(e.data) for e in s.scalars(select(LogEntry)))
    assert types[:3] == ["alert.raised", "escalation.plan_frozen", "escalation.step_started"]
    assert types.count("page.queued") == 4  # two people on duty, SMS and call each
    assert "incident.acknowledged" in types
    # Each person on duty was also called, in their language, with "press 1".
    assert system.twilio.wait_for_calls(lambda calls: len(calls) == 2)
    assert "Press 1 if you are going" in system.twilio.calls_to(RECEPTION)[0].spoken
    for personal in (RECEPTION, FLOOR, "Reception", "Floor"):
        assert personal not in logged


def test_redelivered_alert_gives_one_incident_and_one_sms_each(system: System) -> None:
    alert = Alert(device_id="unit-2", alert_id=new_alert_id(), seq=1, pressed_at=now_utc())
    with unit_client(system, "unit-2") as client:
        for _ in range(4):  # the first send and three redeliveries
            client.publish(alert_topic("unit-2"), alert.to_json(), qos=1).wait_for_publish(5)
        assert system.twilio.wait_for(lambda sent: len(sent) >= 2)
        system.wait_idle(published={"unit-2": 4})  # all four handled: a duplicate shows now
    assert len(incidents(system)) == 1
    assert sorted(s.to for s in system.twilio.sent) == [RECEPTION, FLOOR]


def test_unit_cannot_alert_for_another_room(system: System) -> None:
    # unit-3 logs in with its own credentials and publishes on unit-1's topic.
    forged = Alert(device_id="unit-1", alert_id=new_alert_id(), seq=1, pressed_at=now_utc())
    with unit_client(system, "unit-3") as client:
        client.publish(alert_topic("unit-1"), forged.to_json(), qos=1).wait_for_publish(5)
        # A genuine alert from unit-3 afterwards shows the path works and ordering is done.
        own = Alert(device_id="unit-3", alert_id=new_alert_id(), seq=1, pressed_at=now_utc())
        client.publish(alert_topic("unit-3"), own.to_json(), qos=1).wait_for_publish(5)
        assert wait_until(lambda: len(incidents(system)) >= 1)
        # The broker keeps one client's order: unit-3's own alert handled means the
        # forged one before it was dropped or handled too.
        system.wait_idle(published={"unit-3": 1})
    assert [i.room_id for i in incidents(system)] == ["room-3"]


def test_forged_webhook_is_refused_and_changes_nothing(system: System) -> None:
    room = system.room("unit-1")
    room.press()
    assert wait_until(lambda: room.light is Light.RECEIVED)
    assert system.twilio.wait_for(lambda sent: len(sent) == 2)

    forged = system.twilio.inbound_sms(
        system.sms_webhook,
        public_url=system.sms_webhook_public,
        from_=RECEPTION,
        body="1",
        token="0" * 32,
    )
    unsigned = web.post(system.sms_webhook, data={"From": RECEPTION, "Body": "1"})
    wrong_url = system.twilio.inbound_sms(system.sms_webhook, from_=RECEPTION, body="1")

    assert [forged.status_code, unsigned.status_code, wrong_url.status_code] == [403, 403, 403]
    system.wait_idle()
    [incident] = incidents(system)
    assert incident.state == "open"
    assert room.light is Light.RECEIVED
    assert len(system.twilio.sent) == 2


def test_replayed_reply_acts_once(system: System) -> None:
    room = system.room("unit-1")
    room.press()
    assert system.twilio.wait_for(lambda sent: len(sent) == 2)
    for _ in range(2):
        r = system.twilio.inbound_sms(
            system.sms_webhook,
            public_url=system.sms_webhook_public,
            from_=RECEPTION,
            body=reply_code(system.twilio.to(RECEPTION)),
            sid="SM" + "a" * 32,
        )
        assert r.status_code == 200
    assert wait_until(lambda: room.light is Light.HELP_COMING)
    system.wait_idle()
    assert system.server is not None
    with system.server.services.sessions() as s:
        acks = s.scalar(
            select(func.count())
            .select_from(LogEntry)
            .where(LogEntry.type == "incident.acknowledged")
        )
        pages = s.scalar(select(func.count()).select_from(Page))
    assert acks == 1
    assert pages == 4  # SMS and call to both on duty, and no more
    assert system.twilio.wait_for(lambda sent: len(system.twilio.to(FLOOR)) == 2)
    system.wait_idle()  # a second stand-down would be out by now
    assert len(system.twilio.to(FLOOR)) == 2  # the page and one stand-down, not two
    # A reply whose replay would show: one that is answered every time it is acted on.
    before = len(system.twilio.to(FLOOR))
    for _ in range(2):
        r = system.twilio.inbound_sms(
            system.sms_webhook,
            public_url=system.sms_webhook_public,
            from_=FLOOR,
            body="hello",
            sid="SM" + "b" * 32,
        )
        assert r.status_code == 200
    system.wait_idle()
    assert len(system.twilio.to(FLOOR)) == before + 1, system.twilio.to(FLOOR)[before:]


def publish_raw(system: System, device_id: str, topic: str, payloads: list[bytes]) -> None:
    with unit_client(system, device_id) as client:
        for payload in payloads:
            client.publish(topic, payload, qos=1).wait_for_publish(5)


def test_malformed_alert_is_logged_and_loses_nothing_after_it(
    system: System, caplog: pytest.LogCaptureFixture
) -> None:
    good = Alert(device_id="unit-2", alert_id=new_alert_id(), seq=1, pressed_at=now_utc())
    with caplog.at_level(logging.ERROR, logger="server.units.ingest"):
        publish_raw(
            system,
            "unit-2",
            alert_topic("unit-2"),
            [b"\xff\xfe garbage", b'{"v": 1, "seq": "x"}', good.to_json()],
        )
        assert wait_until(lambda: len(incidents(system)) == 1)
    assert [i.alert_id for i in incidents(system)] == [good.alert_id]
    rejected = [r.getMessage() for r in caplog.records if "rejected message" in r.getMessage()]
    assert len(rejected) == 2
    assert "alert payload is not UTF-8 text" in rejected[0]


def test_logs_hold_no_phone_numbers_or_names(
    system: System, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        room = system.room("unit-1")
        room.press()
        assert system.twilio.wait_for(lambda sent: len(sent) == 2)
        system.twilio.inbound_sms(
            system.sms_webhook,
            public_url=system.sms_webhook_public,
            from_=RECEPTION,
            body=reply_code(system.twilio.to(RECEPTION)),
        )
        system.twilio.inbound_sms(
            system.sms_webhook,
            public_url=system.sms_webhook_public,
            from_="+32499999999",
            body="hello",
        )  # a stranger
        assert wait_until(lambda: room.light is Light.HELP_COMING)
        assert system.twilio.wait_for(lambda sent: len(sent) == 4)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    # The log names the incident by its id (on PostgreSQL not always 1: an alert by MQTT
    # and HTTPS at once uses up an id) and the person by theirs.
    [incident] = system.incidents()
    assert f"incident {incident.id} acknowledged by staff reception" in logged
    for personal in (RECEPTION, FLOOR, "+32499999999", "Reception gaat", system.twilio.auth_token):
        assert personal not in logged
    assert "+32******999" in logged  # the stranger's number, masked


def test_pages_go_even_when_the_units_feedback_fails(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unit hears "received" before the pages are handed on; a feedback that fails
    (a broker refusing the publish, say) must not keep the pages back."""
    assert system.server is not None
    lights = system.server.services.lights

    def broken(*args: object) -> None:
        raise RuntimeError("the broker refused the feedback")

    monkeypatch.setattr(lights, "_publish", broken)
    alert = Alert(device_id="unit-3", alert_id=new_alert_id(), seq=1, pressed_at=now_utc())
    with unit_client(system, "unit-3") as client:
        client.publish(alert_topic("unit-3"), alert.to_json(), qos=1).wait_for_publish(5)
        assert system.twilio.wait_for(lambda sent: len(sent) >= 2)
    assert sorted(s.to for s in system.twilio.sent) == [RECEPTION, FLOOR]
    assert all(s.body.startswith("ALARM Room 3") for s in system.twilio.sent)
