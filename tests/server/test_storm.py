"""A storm: 200 room units press within one second (:mod:`tests.bench.storm`), black
box: each unit a real MQTT client with its own credentials against a real Mosquitto,
the server as its own process, a fake Twilio that enforces Twilio's limits.

Every unit must hear "received" for its own alert; the server must open exactly one
incident per unit (none lost, none twice); every person on duty must get accepted
SMS that, together, name or count every room: rooms named plus "+N more" add up to
exactly 200, with no room named twice. Run with ``pytest -s`` to see the figures
(``make bench`` prints them for 1,000 units).
"""

from __future__ import annotations

from pathlib import Path

from tests.bench.storm import ON_DUTY, measure_storm
from tests.conftest import HEAVY, missing
from tests.harness import find_mosquitto

ROOMS = 200


@HEAVY
def test_a_storm_of_200_units_is_received_once_each_and_reaches_every_phone_on_duty(
    tmp_path: Path,
) -> None:
    if find_mosquitto() is None:
        missing("mosquitto is not installed (apt install mosquitto)")
    run = measure_storm(tmp_path, ROOMS, floor=False, timeout=60)
    print("\n  storm: " + "\n  ".join(run.lines("SQLite")))
    # The presses came together (a storm, not a trickle), even on a loaded machine.
    assert run.app.span < 5.0, f"the presses took {run.app.span:.2f} s"
    assert len(run.app.received) == ROOMS, f"{len(run.app.received)} units heard 'received'"
    assert (run.incidents, run.units) == (ROOMS, ROOMS), "lost or twice"
    assert run.commits < ROOMS / 2, f"{run.commits} commits: alarms that came together not together"
    for phone in ON_DUTY:
        cover = run.sms[phone]
        assert cover.total == ROOMS, (phone[-3:], cover.total)
        assert not cover.twice, (phone[-3:], sorted(cover.twice))
        assert cover.named <= set(range(1, ROOMS + 1))
    # Nothing refused for a limit: only 429s, which the pager waits out.
    assert all(code == 20429 for code, _ in run.refused), run.refused
