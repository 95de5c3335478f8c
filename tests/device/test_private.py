"""What the agent writes in its state folder is its user's alone, whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from device.outbox import Outbox
from device.selftest import SelfTestSchedule
from panicbutton.clock import ManualClock


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The loosest umask: everything anyone could be given, they get."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("open_umask")
def test_outbox_and_self_test_files_are_private(tmp_path: Path) -> None:
    state = tmp_path / "var" / "panicbutton"
    box = Outbox(state / "outbox.sqlite3")
    box.add("unit-1")  # the write-ahead log and its index exist while it is open
    schedule = SelfTestSchedule(state / "selftest.last", 1, ManualClock())
    assert not schedule.due()  # the first start writes the time
    modes = {p.name: oct(mode(p)) for p in state.iterdir()}
    box.shutdown()
    assert modes == {
        "outbox.sqlite3": "0o600",
        "outbox.sqlite3-wal": "0o600",
        "outbox.sqlite3-shm": "0o600",
        "selftest.last": "0o600",
    }
    assert (oct(mode(tmp_path / "var")), oct(mode(state))) == ("0o700", "0o700")


@pytest.mark.usefixtures("open_umask")
def test_an_outbox_made_before_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    Outbox(path).shutdown()
    path.chmod(0o644)  # as an older agent left it
    box = Outbox(path)
    assert oct(mode(path)) == "0o600"
    assert box.fault is None
    box.shutdown()
