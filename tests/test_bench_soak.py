"""``make soak`` (:mod:`tests.bench.soak`), run for a few seconds: the server as its own
process takes every alarm while units stay connected and send their statuses, and the
report says so. ``make soak`` runs it for an hour."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.soak import main, measure_soak
from tests.conftest import HEAVY, missing
from tests.harness import find_mosquitto


@HEAVY
def test_a_short_soak_loses_no_alarm_and_reports_no_unit_offline(tmp_path: Path) -> None:
    if find_mosquitto() is None:
        missing("mosquitto is not installed (apt install mosquitto)")
    run = measure_soak(tmp_path, minutes=0.2, units=4, alarm_every=3.0)
    report = "\n".join(run.report())
    print(report)
    assert not run.lost, run.lost
    assert len(run.alarms) == 4
    assert all(0 < received < 15 and 0 < sms < 15 for _, received, sms in run.alarms)
    assert run.offline_pages == 0
    assert run.heartbeats > 4  # each unit said it is online once connected, and beat on
    assert "alarms: 4 received and paged, 0 lost" in report
    assert not run.failed()
    assert run.samples[-1].rss_mib > 10  # the server process, measured


def test_the_soak_refuses_a_run_too_short_for_one_alarm(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--minutes", "0.1", "--alarm-every", "30"])
    assert "too short for even one alarm" in capsys.readouterr().err
