"""Appending to the log through the commit hook (SQLite here; PostgreSQL in
test_log_postgres.py): numbering, refusal of what the log cannot hold, rollback."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.log import canonical, checkpoints, integrity, spec
from server.db import MIGRATIONS, make_engine, migrate, sessions
from server.log import append as audit_module
from server.log.append import audit, frontier
from server.models import LogEntry, WebhookReceipt

AT = datetime(2026, 11, 28, 21, 4, 5, 123000, tzinfo=UTC)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'log.sqlite3'}")
    migrate(engine)
    yield engine
    engine.dispose()


def bodies(engine: Engine) -> list[bytes]:
    with sessions(engine)() as s:
        return list(s.scalars(select(LogEntry.body).order_by(LogEntry.n)))


def failing_change(maker: sessionmaker[Session]) -> None:
    """A transaction that logs an event, then fails: it must take no number."""
    with maker.begin() as s:
        audit(s, at=AT, type="log.heartbeat")
        raise RuntimeError("the change failed")


@pytest.mark.parametrize("returning", [True, False], ids=["returning", "update-then-select"])
def test_commits_number_entries_without_gaps_and_verify(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, returning: bool
) -> None:
    # False is the path for SQLite before 3.35 (Debian 11), which has no RETURNING.
    monkeypatch.setattr(audit_module, "_RETURNING", returning)
    maker = sessions(engine)
    for batch in (1, 3, 2):
        with maker.begin() as s:
            for _ in range(batch):
                audit(s, at=AT, type="log.heartbeat")
    with pytest.raises(RuntimeError, match="the change failed"):
        failing_change(maker)
    with maker.begin() as s:
        audit(s, at=AT, type="duty.takeover", staff="reception", until=AT)

    stored = bodies(engine)
    assert [spec.parse_entry(b).n for b in stored] == list(range(7))
    signer = checkpoints.Signer.generate("panicbutton.test/log")
    with engine.connect() as conn:
        head = frontier(conn)
    note = signer.sign_checkpoint(head.size, head.root()).note
    report, parsed = integrity.verify_full(stored, [note], signer.verifier)
    assert report.size == 7
    assert parsed[-1].data == {"staff": "reception", "until": "2026-11-28T21:04:05.123Z"}


def test_what_the_log_cannot_hold_is_refused_at_the_call(engine: Engine) -> None:
    with sessions(engine)() as s:
        with pytest.raises(spec.LogFormatError, match="not one of the log's version-1 types"):
            audit(s, at=AT, type="alert.cancelled")
        with pytest.raises(spec.LogFormatError, match="field\\(s\\) phone are not allowed"):
            audit(s, at=AT, type="incident.acknowledged", staff="reception", phone="+3247")
        with pytest.raises(canonical.CanonicalError, match="float cannot go into the log"):
            audit(s, at=AT, type="escalation.step_started", step=1, due=AT, lag_ms=1.5)
    assert bodies(engine) == []


def types(engine: Engine) -> list[str]:
    return [spec.parse_entry(b).type for b in bodies(engine)]


def test_a_rolled_back_savepoint_takes_only_its_own_events(engine: Engine) -> None:
    with sessions(engine).begin() as s:
        audit(s, at=AT, type="staff.opt_out", staff="floor")
        kept = s.begin_nested()
        audit(s, at=AT, type="duty.takeover", staff="floor", until=AT)
        kept.commit()  # released: its event goes with the whole transaction
        dropped = s.begin_nested()
        audit(s, at=AT, type="staff.opt_in", staff="floor")
        dropped.rollback()
    assert types(engine) == ["staff.opt_out", "duty.takeover"]


def test_events_of_a_session_closed_without_commit_never_reach_the_log(engine: Engine) -> None:
    s = sessions(engine)()
    audit(s, at=AT, type="log.heartbeat")
    s.close()
    with s.begin():  # the same session object, used again
        audit(s, at=AT, type="staff.opt_in", staff="floor")
    assert types(engine) == ["staff.opt_in"]


def test_a_time_without_zone_is_refused_at_the_call(engine: Engine) -> None:
    with sessions(engine)() as s, pytest.raises(spec.LogFormatError, match="time zone"):
        audit(s, at=AT.replace(tzinfo=None), type="log.heartbeat")


def test_audit_events_of_an_older_install_become_the_first_log_entries(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
        conn.execute(
            text("INSERT INTO audit_events (at, type, incident_id, data) VALUES (:at, :t, :i, :d)"),
            [
                {"at": "2026-11-27 21:04:05.123000", "t": "log.heartbeat", "i": None, "d": "{}"},
                {
                    "at": "2026-11-27 21:05:00.000000",
                    "t": "duty.takeover",
                    "i": None,
                    "d": '{"staff": "floor", "until": "2026-11-28T05:05:00+00:00"}',
                },
            ],
        )
    migrate(engine)
    stored = bodies(engine)
    with engine.connect() as conn:
        head = frontier(conn)
    signer = checkpoints.Signer.generate("panicbutton.test/log")
    note = signer.sign_checkpoint(head.size, head.root()).note
    _, parsed = integrity.verify_full(stored, [note], signer.verifier)
    assert [(e.n, e.type) for e in parsed] == [(0, "log.heartbeat"), (1, "duty.takeover")]
    assert parsed[1].data == {"staff": "floor", "until": "2026-11-28T05:05:00.000Z"}
    assert [spec.parse_entry(b).at for b in stored] == [
        "2026-11-27T21:04:05.123Z",
        "2026-11-27T21:05:00.000Z",
    ]
    engine.dispose()


def test_a_failed_flush_in_a_savepoint_keeps_the_events_before_it(engine: Engine) -> None:
    """The idempotent-insert pattern: a duplicate inside a savepoint fails and is
    rolled back; the change around it, and its event, still commit."""
    maker = sessions(engine)
    with maker.begin() as s:
        s.add(WebhookReceipt(key="SM1", at=AT))
    with maker.begin() as s:
        audit(s, at=AT, type="staff.opt_out", staff="floor")
        with pytest.raises(IntegrityError):
            insert_in_savepoint(s, WebhookReceipt(key="SM1", at=AT))
    assert types(engine) == ["staff.opt_out"]


def insert_in_savepoint(s: Session, row: WebhookReceipt) -> None:
    with s.begin_nested():
        s.add(row)
        s.flush()
