"""The room unit between presses: reboots, scheduled self-tests, what the light says."""

from __future__ import annotations

import time

from device.indicator import Light
from tests.harness import MANAGER, RECEPTION, System, reply_code, wait_until


def test_light_is_restored_after_a_reboot_from_retained_feedback(system: System) -> None:
    room = system.room("unit-1")
    room.press()
    assert system.twilio.wait_for(lambda sent: len(sent) == 2)
    system.twilio.inbound_sms(
        system.sms_webhook,
        public_url=system.sms_webhook_public,
        from_=RECEPTION,
        body=reply_code(system.twilio.to(RECEPTION)),
    )
    assert wait_until(lambda: room.light is Light.HELP_COMING)
    room.agent.close()  # power cut / reboot

    again = system.room("unit-1")
    assert wait_until(lambda: again.light is Light.HELP_COMING), again.lights
    # Nothing at the unit cancels: a press now is a re-press of the same incident.
    again.press()
    assert wait_until(lambda: [i.presses for i in system.incidents()] == [2])


def test_scheduled_self_test_pages_test_recipients_silently(system: System) -> None:
    state = system.folder / "unit-1"
    state.mkdir(parents=True)
    (state / "selftest.last").write_text(f"{time.time() - 2 * 3600:.0f}")  # due: 2 h ago
    room = system.room("unit-1", selftest={"every_hours": 1})

    assert system.twilio.wait_for(lambda sent: len(sent) == 1)
    assert system.twilio.sent[0].to == MANAGER
    assert system.twilio.sent[0].body.startswith("TEST Room 1")
    assert wait_until(
        lambda: [e.data["result"] for e in system.events("test.completed")] == ["passed"]
    )
    # A scheduled test does not light up the room, before or after the server's answer.
    assert wait_until(
        lambda: room.agent.outbox.open_alert() is None and not room.agent.outbox.pending()
    )
    system.wait_idle()  # the server's answers are in and the unit's thread has caught up
    assert set(room.lights) <= {Light.NO_LINK, Light.ARMED}
    assert float((state / "selftest.last").read_text()) > time.time() - 60


def test_first_start_only_schedules_the_self_test(system: System) -> None:
    room = system.room("unit-1", selftest={"every_hours": 24})
    assert wait_until(lambda: room.light is Light.ARMED)
    assert wait_until((system.folder / "unit-1" / "selftest.last").is_file)
    # A test alert sent now would be unconfirmed, or handled and paged, until idle.
    system.wait_idle()
    assert room.agent.outbox.depth() == 0
    assert system.twilio.sent == []
