"""The self-test schedule, on a clock the test moves by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from device.selftest import SelfTestSchedule
from panicbutton.clock import ManualClock

#: A whole second: the file keeps whole seconds.
START = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)


def test_first_start_sets_the_schedule_and_the_test_is_due_every_period(tmp_path: Path) -> None:
    clock = ManualClock(START)
    schedule = SelfTestSchedule(tmp_path / "selftest.last", 2, clock)
    assert not schedule.due()  # the first start only records the time
    clock.advance(2 * 3600 - 1)
    assert not schedule.due()
    clock.advance(1)
    assert schedule.due()
    assert not schedule.due()  # noted as done: the next is two hours on
    assert float((tmp_path / "selftest.last").read_text()) == clock.time()


def test_zero_hours_never_tests_nor_writes(tmp_path: Path) -> None:
    clock = ManualClock()
    schedule = SelfTestSchedule(tmp_path / "selftest.last", 0, clock)
    clock.advance(365 * 24 * 3600)
    assert not schedule.due()
    assert not (tmp_path / "selftest.last").exists()


def test_a_time_that_cannot_be_recorded_is_an_error_not_a_test(tmp_path: Path) -> None:
    schedule = SelfTestSchedule(tmp_path / "missing" / "selftest.last", 1, ManualClock())
    with pytest.raises(OSError, match="No such file"):
        schedule.due()
