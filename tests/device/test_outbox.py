"""The outbox keeps every press until the server confirms it, across restarts."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from unittest import mock

from device.outbox import Outbox
from panicbutton.wire import AlertKind


def test_press_survives_reopen_until_confirmed(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    box = Outbox(path)
    first = box.add("unit-1")
    second = box.add("unit-1")
    box.shutdown()  # as if the agent was killed: nothing but the file remains

    box = Outbox(path)
    assert [a.alert_id for a in box.pending()] == [first.alert_id, second.alert_id]
    assert box.confirm(first.alert_id) is True
    assert box.confirm(first.alert_id) is False  # a second confirmation is harmless
    assert [a.alert_id for a in box.pending()] == [second.alert_id]
    assert box.fault is None


def test_sequence_survives_restart_and_confirmation(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    box = Outbox(path)
    for _ in range(3):
        box.confirm(box.add("unit-1").alert_id)
    box.shutdown()
    assert Outbox(path).add("unit-1").seq == 4


def test_corrupt_file_is_moved_aside_and_presses_stay_durable(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    box = Outbox(path)
    alert = box.add("unit-1")
    assert box.fault is not None
    assert "was corrupt" in box.fault
    assert len(list(tmp_path.glob("outbox.sqlite3.corrupt-*"))) == 1  # kept for inspection
    box.shutdown()
    assert [a.alert_id for a in Outbox(path).pending()] == [alert.alert_id]


def test_open_alert_takes_represses_until_closed(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    box = Outbox(path)
    first = box.add("unit-1")
    assert box.confirm(first.alert_id, presses=1)
    again = box.repress(first.alert_id)
    assert again is not None
    assert again.presses == 2
    assert box.pending() == [again]  # unconfirmed again until the server has the re-press
    assert not box.confirm(first.alert_id, presses=1)  # stale feedback does not confirm it
    assert box.confirm(first.alert_id, presses=2)
    box.shutdown()
    box = Outbox(path)
    assert box.open_alert() == again
    box.close(first.alert_id)
    assert box.open_alert() is None


def test_resolve_keeps_a_press_the_server_has_not_counted(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite3")
    first = box.add("unit-1")
    assert box.confirm(first.alert_id, presses=1)
    again = box.repress(first.alert_id)  # pressed after staff resolved, unheard here
    assert box.close(first.alert_id, presses=1) is False  # resolved after 1 press only
    assert box.open_alert() == again
    assert box.pending() == [again]  # still sent until the server has it
    assert box.close(first.alert_id, presses=2) is True
    assert box.open_alert() is None
    assert box.pending() == []


def test_reopened_alert_takes_represses_again_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    box = Outbox(path)
    first = box.add("unit-1")
    box.close(first.alert_id, presses=1)
    assert box.reopen(first.alert_id, presses=2) is True  # the server's count: 2
    assert box.reopen(first.alert_id, presses=2) is False  # already open
    box.shutdown()
    box = Outbox(path)
    reopened = box.open_alert()
    assert reopened is not None
    assert (reopened.alert_id, reopened.presses) == (first.alert_id, 2)
    assert box.pending() == []  # the server has it
    again = box.repress(first.alert_id)
    assert again is not None
    assert again.presses == 3  # counted on from the server's count
    test = box.add("unit-1", AlertKind.TEST)
    box.close(test.alert_id)
    assert box.reopen(test.alert_id, presses=1) is False  # only a panic alert reopens


def test_unwritable_location_is_reported_and_press_kept_in_memory() -> None:
    # /proc refuses new files even to root, like a read-only root file system.
    box = Outbox(Path("/proc/self/panicbutton/outbox.sqlite3"))
    alert = box.add("unit-1")
    assert box.fault is not None
    assert "cannot be opened" in box.fault
    assert box.pending() == [alert]


def test_full_disk_at_start_keeps_the_file_and_its_pending_alert(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    box = Outbox(path)
    pending = box.add("unit-1")
    box.shutdown()
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorname = "SQLITE_FULL"
    with mock.patch.object(Outbox, "_open", side_effect=full):
        box = Outbox(path)
    assert box.fault is not None
    assert "disk is full" in box.fault
    assert [a.alert_id for a in box.pending()] == [pending.alert_id]  # still resent
    assert list(tmp_path.glob("*.corrupt-*")) == []  # not mistaken for corruption
    assert box.add("unit-1").seq == 2  # the sequence goes on, from memory
