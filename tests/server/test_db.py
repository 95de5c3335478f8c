"""The SQLite database holds names, numbers and notes: its files are private."""

from __future__ import annotations

import logging
import sqlite3
import stat
from pathlib import Path

import pytest

from server.db import make_engine, migrate


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_an_existing_readable_database_is_made_private_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "old.sqlite3"
    sqlite3.connect(path).close()  # an older server left it 0644 (umask 022)
    for name in ("old.sqlite3", "old.sqlite3-wal", "old.sqlite3-shm"):
        (tmp_path / name).touch()
        (tmp_path / name).chmod(0o644)

    with caplog.at_level(logging.WARNING, logger="server.db"):
        engine = make_engine(f"sqlite:///{path}")

    assert {p.name: oct(mode(p)) for p in tmp_path.iterdir()} == {
        "old.sqlite3": "0o600",
        "old.sqlite3-wal": "0o600",
        "old.sqlite3-shm": "0o600",
    }
    assert f"database file {path} was readable by others (mode 644)" in caplog.text
    migrate(engine)  # and it still opens
    engine.dispose()


def test_a_new_database_is_created_private(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"

    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    with engine.connect() as conn:  # WAL and shared memory exist while it is open
        assert {p.name: oct(mode(p)) for p in tmp_path.iterdir()} == {
            "new.sqlite3": "0o600",
            "new.sqlite3-wal": "0o600",
            "new.sqlite3-shm": "0o600",
        }
        conn.close()
    engine.dispose()
