"""A press after staff resolved, which the unit never heard about, reopens the incident:
the room's light follows the reopened alarm ("the one allowed step back").

Real Mosquitto (stopped and started in place), the real server and the project's unit on
gpiozero's MockFactory; staff act through the console's API.
"""

from __future__ import annotations

from device.indicator import Light
from panicbutton.wire import Alert, Feedback
from tests import web
from tests.harness import DEVICE_TOKENS, System, wait_until


def console(system: System, incident_id: int, action: str, **body: str) -> None:
    """What staff do in the console: acknowledge or resolve an incident."""
    answer = web.post(
        f"{system.api}/incidents/{incident_id}/{action}",
        json=body,
        headers=system.headers(body.get("staff_id", "manager")),
    )
    assert answer.status_code == 200, answer.text


def only_incident(system: System) -> int:
    """The id of the one incident (on PostgreSQL not always 1: when a unit's alert comes by
    MQTT and HTTPS at once, the insert that loses the race used up an id)."""
    [incident] = system.incidents()
    return incident.id


def test_press_after_an_unheard_resolve_shows_the_reopened_alarm(system: System) -> None:
    assert system.broker is not None
    room = system.room("unit-1", mqtt={"keepalive": 5})
    room.press()
    assert wait_until(lambda: room.light is Light.RECEIVED), room.lights
    system.wait_idle()

    system.broker.stop()  # the unit is cut off: it never hears what staff do now
    assert wait_until(lambda: not room.agent.link.connected)
    console(system, only_incident(system), "resolve", staff_id="reception", outcome="genuine")
    room.press()  # the worker is in danger again
    assert wait_until(lambda: room.agent.outbox.depth() == 1)

    system.broker.start()
    assert wait_until(
        lambda: [(i.state, i.round, i.presses) for i in system.incidents()] == [("open", 1, 2)],
        timeout=30,
    ), [(i.id, i.state, i.round, i.presses) for i in system.incidents()]
    system.wait_idle(timeout=30)  # the stale "resolved" and the reopened "received" are in
    assert room.light is Light.RECEIVED, room.lights

    console(system, only_incident(system), "acknowledge", staff_id="reception")
    assert wait_until(lambda: room.light is Light.HELP_COMING), room.lights

    room.press()  # still the same alarm: counted on incident 1, not a second incident
    assert wait_until(lambda: [i.presses for i in system.incidents()] == [3]), [
        (i.id, i.presses) for i in system.incidents()
    ]
    system.wait_idle()
    assert [i.state for i in system.incidents()] == ["acknowledged"]
    assert room.lights[-1] is Light.HELP_COMING  # the light it shows now

    room.agent.close()  # a reboot: the retained feedback is the reopened round
    again = system.room("unit-1")
    assert wait_until(lambda: again.light is Light.HELP_COMING), again.lights
    again.press()
    assert wait_until(lambda: [i.presses for i in system.incidents()] == [4])
    assert len(system.incidents()) == 1


def test_unit_that_closed_the_alert_opens_it_again_when_the_server_reopens_it(
    system: System,
) -> None:
    room = system.room("unit-1")
    room.press()
    assert wait_until(lambda: room.light is Light.RECEIVED), room.lights
    console(system, only_incident(system), "resolve", staff_id="reception", outcome="genuine")
    assert wait_until(lambda: room.light is Light.ARMED), room.lights
    assert room.agent.outbox.open_alert() is None  # heard "resolved": the entry is closed
    [incident] = system.incidents()

    room.agent.close()  # off; meanwhile a copy of a later press reaches the server
    pressed_again = Alert(
        device_id="unit-1",
        alert_id=incident.alert_id,
        seq=incident.seq,
        pressed_at=incident.pressed_at,
        presses=2,
    )
    answer = web.post(
        f"{system.api}/devices/unit-1/alerts",
        content=pressed_again.to_json(),
        headers={"Authorization": f"Bearer {DEVICE_TOKENS['unit-1']}"},
    )
    assert answer.status_code == 200, answer.text
    assert Feedback.from_json(answer.content).round == 1  # the server reopened incident 1

    # Back on: the retained feedback is the reopened round; the light shows the alarm.
    again = system.room("unit-1")
    assert wait_until(lambda: again.light is Light.RECEIVED), again.lights
    console(system, only_incident(system), "acknowledge", staff_id="reception")
    assert wait_until(lambda: again.light is Light.HELP_COMING), again.lights
    again.press()  # a re-press of the reopened alarm, counted after the server's 2
    assert wait_until(lambda: [i.presses for i in system.incidents()] == [3]), [
        (i.id, i.presses) for i in system.incidents()
    ]
    system.wait_idle()
    assert [(i.state, i.round) for i in system.incidents()] == [("acknowledged", 1)]
    assert again.light is Light.HELP_COMING


def test_unit_rebooted_before_the_link_is_back_still_sends_the_press_and_shows_the_reopen(
    system: System,
) -> None:
    assert system.broker is not None
    room = system.room("unit-1", mqtt={"keepalive": 5})
    room.press()
    assert wait_until(lambda: room.light is Light.RECEIVED), room.lights
    system.wait_idle()
    system.broker.stop()
    assert wait_until(lambda: not room.agent.link.connected)
    console(system, only_incident(system), "resolve", staff_id="reception", outcome="genuine")
    room.press()
    assert wait_until(lambda: room.agent.outbox.depth() == 1)
    room.agent.close()  # power cut while cut off: the press is on the unit's disk

    system.broker.start()  # retained at the broker: "resolved" for 1 press, round 0
    again = system.room("unit-1")
    assert wait_until(
        lambda: [(i.state, i.round, i.presses) for i in system.incidents()] == [("open", 1, 2)],
        timeout=30,
    ), [(i.id, i.state, i.round, i.presses) for i in system.incidents()]
    system.wait_idle(timeout=30)
    assert again.light is Light.RECEIVED, again.lights
