"""The outbox keeps every press until the server confirms it, across restarts."""

from __future__ import annotations

from pathlib import Path

from device.outbox import Outbox


def test_press_survives_reopen_until_confirmed(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    box = Outbox(path)
    first = box.add("unit-1")
    second = box.add("unit-1")
    box.close()  # as if the agent was killed: nothing but the file remains

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
    box.close()
    assert Outbox(path).add("unit-1").seq == 4


def test_corrupt_file_is_reported_and_press_still_sent_from_memory(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    box = Outbox(path)
    alert = box.add("unit-1")
    assert box.fault is not None
    assert "cannot be opened" in box.fault
    assert [a.alert_id for a in box.pending()] == [alert.alert_id]
    assert box.confirm(alert.alert_id)
    assert box.pending() == []


def test_unwritable_location_is_reported_and_press_kept_in_memory() -> None:
    # /proc refuses new files even to root, like a read-only root file system.
    box = Outbox(Path("/proc/self/panicbutton/outbox.sqlite3"))
    alert = box.add("unit-1")
    assert box.fault is not None
    assert "cannot be opened" in box.fault
    assert box.pending() == [alert]
