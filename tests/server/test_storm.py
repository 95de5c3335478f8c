"""A storm: 200 rooms press within one second (:mod:`tests.bench.storm`), against a
fake Twilio that enforces Twilio's limits.

Every person on duty must get accepted SMS and accepted calls that, together, name
or count every room: rooms named plus "+N more" add up to exactly 200, with no room
named twice. Run with ``pytest -s`` to see the figure (``make bench`` prints it too).
"""

from __future__ import annotations

from pathlib import Path

from tests.bench.storm import ON_DUTY, measure_storm
from tests.conftest import missing
from tests.harness import find_mosquitto

ROOMS = 200


def test_a_storm_of_200_rooms_reaches_every_phone_on_duty_about_every_room(
    tmp_path: Path,
) -> None:
    if find_mosquitto() is None:
        missing("mosquitto is not installed (apt install mosquitto)")
    run = measure_storm(tmp_path, ROOMS)
    print(f"\n  storm: {run.line()}")
    assert run.press_span < 1.0, f"the presses took {run.press_span:.2f} s"
    for phone in ON_DUTY:
        for what, cover in (("SMS", run.sms[phone]), ("calls", run.calls[phone])):
            assert cover.total == ROOMS, (phone[-3:], what, cover.total)
            assert not cover.twice, (phone[-3:], what, sorted(cover.twice))
            assert cover.named <= set(range(1, ROOMS + 1))
    # Nothing refused for a limit: only 429s, which the pager waits out.
    assert all(code == 20429 for code, _ in run.refused), run.refused
