"""`panicbutton device check`, as an installer runs it after wiring a unit."""

from __future__ import annotations

import time

from gpiozero.pins.mock import MockFactory, MockPin

from device.check import check
from device.config import parse_config
from tests.harness import MANAGER, System


def test_check_passes_on_a_good_install(system: System) -> None:
    lines: list[str] = []
    config = parse_config(system.room_config("unit-2", server=system.https_table("unit-2")))
    failed = check(config, say=lines.append, pin_factory=MockFactory())
    text = "\n".join(lines)
    assert failed == 0, text
    assert "ok    button: GPIO17 reads released" in text
    assert "ok    broker: logged in to 127.0.0.1" in text
    assert "ok    server: confirmed the test alert" in text
    assert "ok    https path: http://127.0.0.1" in text
    assert text.endswith("all checks passed")
    # The round trip was a test alert: only the test recipients were paged.
    assert system.twilio.wait_for(lambda sent: len(sent) == 1)
    assert system.twilio.sent[0].to == MANAGER
    assert system.twilio.sent[0].body.startswith("TEST Room 2")


class ShortedPin(MockPin):  # type: ignore[misc]  # gpiozero ships no type hints
    """An input wired straight to ground: it reads low whatever its pull-up says."""

    def _set_pull(self, value: str) -> None:
        super()._set_pull(value)
        if value == "up":
            self.drive_low()


def test_check_names_each_problem(system: System) -> None:
    factory = MockFactory(pin_class=ShortedPin)
    lines: list[str] = []
    config = parse_config(
        system.room_config(
            "unit-2",
            mqtt={"password": "not-the-password"},
            server={**system.https_table("unit-2"), "token": "wrong-token"},
        )
    )
    started = time.monotonic()
    failed = check(config, say=lines.append, pin_factory=factory)
    text = "\n".join(lines)
    assert failed == 3
    assert "FAIL  button: GPIO17 reads pressed while nobody presses it" in text
    assert (
        f"FAIL  broker: the broker at 127.0.0.1:{system.mqtt_port} refused the login of unit-2: "
        "Not authorized; check that mqtt.password_file holds this unit's password"
    ) in text
    assert "FAIL  https path: " in text
    assert "the token is wrong" in text
    assert time.monotonic() - started < 15
    assert system.incidents() == []
