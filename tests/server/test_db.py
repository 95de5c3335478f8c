"""The SQLite database holds names, numbers and notes: its files are private."""

from __future__ import annotations

import logging
import sqlite3
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text

from server.db import MIGRATIONS, make_engine, migrate


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


def test_migration_0006_drops_the_unread_purge_date_and_keeps_the_rows(database_url: str) -> None:
    """A database at 0005 holding personal data comes to head with every row kept and
    no ``purge_after``; it goes back to 0005 and up again (SQLite and PostgreSQL)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    engine = make_engine(database_url)

    def to(revision: str, *, down: bool = False) -> None:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            (command.downgrade if down else command.upgrade)(cfg, revision)

    def columns() -> set[str]:
        return {c["name"] for c in inspect(engine).get_columns("personal_data")}

    to("0005")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO personal_data (ref, kind, salt, value, subjects, created_at, "
                "purge_after) VALUES ('r1', 'note', :salt, '\"kept\"', '[]', :at, :at)"
            ),
            {"salt": b"\x00" * 16, "at": datetime(2026, 1, 2, tzinfo=UTC)},
        )
    assert "purge_after" in columns()

    migrate(engine)
    assert "purge_after" not in columns()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT ref, kind FROM personal_data")).all() == [("r1", "note")]

    to("0005", down=True)
    assert "purge_after" in columns()
    with engine.connect() as conn:
        assert conn.execute(
            text("SELECT ref FROM personal_data WHERE purge_after IS NOT NULL")
        ).all() == [("r1",)]
    migrate(engine)
    assert "purge_after" not in columns()
    engine.dispose()


def test_migration_0014_keeps_duress_alarms_apart_and_each_position_s_time(
    database_url: str,
) -> None:
    """A check-in whose ``alert_id`` is a duress alarm's has it moved to
    ``duress_alert_id`` (a missed check-out's stays); a position kept before takes its
    kept time as the one the phone sent. Down to 0013 and up again keeps both."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    engine = make_engine(database_url)

    def to(revision: str, *, down: bool = False) -> None:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            (command.downgrade if down else command.upgrade)(cfg, revision)

    def checkins() -> list[tuple[Any, ...]]:
        with engine.connect() as conn:
            columns = {c["name"] for c in inspect(engine).get_columns("mobile_checkins")}
            duress = "duress_alert_id" if "duress_alert_id" in columns else "NULL"
            query = f"SELECT client_id, alert_id, {duress} FROM mobile_checkins ORDER BY id"
            return [tuple(row) for row in conn.execute(text(query))]

    at = datetime(2026, 1, 2, tzinfo=UTC)
    to("0013")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO people (id, name, language, phone_problem, created_at) "
                "VALUES ('w-1', 'W', 'en', '', :at)"
            ),
            {"at": at},
        )
        conn.execute(
            text(
                "INSERT INTO mobile_phones (id, person_id, public_key, number, fallback_sha256, "
                "pin_hash, duress_hash, label, created_by, created_at, pin_failures) VALUES "
                "('p1', 'w-1', :key, '+32470555001', 'x', 'x', 'x', '', 'w-1', :at, 0)"
            ),
            {"key": b"k", "at": at},
        )
        for n, (alert_id, kind) in enumerate((("a" * 32, "duress"), ("b" * 32, "missed_checkout"))):
            conn.execute(
                text(
                    "INSERT INTO incidents (alert_id, device_id, room_id, kind, seq, pressed_at, "
                    "received_at, state) VALUES (:a, '-phone-p1', '-phone-p1', :k, 0, :at, :at, "
                    "'open')"
                ),
                {"a": alert_id, "k": kind, "at": at},
            )
            conn.execute(
                text(
                    "INSERT INTO mobile_checkins (phone_id, person_id, client_id, started_at, "
                    "ends_at, note, state, reminders, alert_id) VALUES ('p1', 'w-1', :c, :at, "
                    ":at, '', 'closed', 0, :a)"
                ),
                {"c": str(n) * 32, "a": alert_id, "at": at},
            )
        conn.execute(
            text(
                "INSERT INTO mobile_positions (incident_id, phone_id, latitude, longitude, "
                "accuracy, taken_at, received_at) VALUES (1, 'p1', 50.8, 4.3, 12, :at, :at)"
            ),
            {"at": at},
        )

    migrate(engine)
    assert checkins() == [("0" * 32, None, "a" * 32), ("1" * 32, "b" * 32, None)]
    with engine.connect() as conn:
        same = "SELECT COUNT(*) FROM mobile_positions WHERE sent_taken_at = taken_at"
        assert conn.execute(text(same)).scalar() == 1

    to("0013", down=True)
    assert checkins() == [("0" * 32, "a" * 32, None), ("1" * 32, "b" * 32, None)]
    migrate(engine)
    assert checkins() == [("0" * 32, None, "a" * 32), ("1" * 32, "b" * 32, None)]
    engine.dispose()
