"""The incident log on PostgreSQL: what the database refuses, what concurrency cannot
break, and what the verifier catches when a superuser gets around the refusals.

Every entry is appended through ``server.log.append.audit`` in sessions from
``server.db.sessions`` (the commit hook numbers it), checkpoints are signed by
``LogKeeper.sign()``, and bundles are checked with ``panicbutton.log.verify.main``,
exactly as an inspector would run it.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg.errors
import pytest
from sqlalchemy import Engine, create_engine, delete, func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from panicbutton.log import canonical, checkpoints, integrity, spec, verdict, verify
from panicbutton.wire import Alert, new_alert_id
from server import incidents
from server.commands import db_command
from server.db import make_engine, migrate, sessions
from server.log import export
from server.log.append import audit
from server.log.keeper import LogKeeper
from server.log.personal import Retention
from server.log.stored import verify_stored
from server.models import Incident, LogCheckpoint, LogEntry, LogState
from tests.harness import postgres_database, sample_site

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 3, 29, 0, 59, tzinfo=UTC)
SITE = sample_site()
LOG_TABLES = ("log_entries", "log_checkpoints", "log_state")


@pytest.fixture
def pg_url(pg_available: None) -> Iterator[str]:
    """A fresh PostgreSQL database (dropped afterwards); skips or fails as conftest says."""
    with postgres_database(f"pb_log_{secrets.token_hex(4)}") as url:
        yield url


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    """The owner's engine (the superuser ``postgres``) on a migrated database."""
    engine = make_engine(pg_url)
    migrate(engine)
    yield engine
    engine.dispose()


@dataclass
class Keeper:
    """A log keeper that signs on demand, and the inspector's copy of its key."""

    keeper: LogKeeper
    key_file: Path
    checkpoint_file: Path

    @property
    def key(self) -> checkpoints.VerifierKey:
        return self.keeper.signer.verifier

    def sign(self) -> checkpoints.Checkpoint:
        cp = self.keeper.sign()
        assert cp is not None, "the log did not grow since the last checkpoint"
        return cp


def make_keeper(engine: Engine, folder: Path) -> Keeper:
    signer = checkpoints.Signer.generate("panicbutton.test/log")
    key_file = folder / "log-key.pub"
    key_file.write_text(f"{signer.verifier}\n")
    checkpoint_file = folder / "cp.jsonl"
    keeper = LogKeeper(
        engine=engine,
        sessions=sessions(engine),
        signer=signer,
        checkpoint_file=checkpoint_file,
        clock=lambda: datetime.now(UTC),
        retention=Retention(),
    )
    return Keeper(keeper, key_file, checkpoint_file)


def heartbeats(maker: sessionmaker[Session], count: int, start: datetime = T0) -> None:
    """``count`` heartbeats, one transaction each, a second apart."""
    for i in range(count):
        with maker.begin() as s:
            audit(s, at=start + timedelta(seconds=i), type="log.heartbeat")


def numbers(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.scalars(select(LogEntry.n).order_by(LogEntry.n)))


def bodies(engine: Engine) -> list[bytes]:
    with engine.connect() as conn:
        return list(conn.scalars(select(LogEntry.body).order_by(LogEntry.n)))


def head_size(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(LogState.size).where(LogState.id == 1)) or 0


def export_and_verify(
    engine: Engine,
    keeper: Keeper,
    out: Path,
    capsys: pytest.CaptureFixture[str],
    *options: str,
) -> tuple[int, str]:
    """Export a full bundle to ``out`` and run the inspector's verifier on it with the
    published key; returns (exit status, everything it printed)."""
    with sessions(engine)() as s:
        files = export.bundle_files(
            s, scope="full", signer=keeper.keeper.signer, now=datetime.now(UTC)
        )
    bundle = export.write_bundle(files, out)
    capsys.readouterr()
    status = verify.main([str(bundle), "--key", str(keeper.key_file), *options])
    printed = capsys.readouterr()
    return status, printed.out + printed.err


def pg_error(caught: pytest.ExceptionInfo[DBAPIError]) -> BaseException:
    orig = caught.value.orig
    assert orig is not None
    return orig


def rewrite_as_superuser(engine: Engine, n: int, change: Callable[[dict[str, Any]], None]) -> None:
    """Replace entry ``n``'s body by an edited, still canonical, copy, with the
    append-only triggers switched off for this transaction (replication role)."""
    with engine.begin() as conn:
        body = conn.scalar(select(LogEntry.body).where(LogEntry.n == n))
        assert body is not None
        entry = canonical.loads(body)
        change(entry)
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(
            text("UPDATE log_entries SET body = :body WHERE n = :n"),
            {"body": canonical.dumps(entry), "n": n},
        )


# -- 1. privileges and triggers -----------------------------------------------------------
def test_application_role_cannot_update_or_delete_the_log(
    engine: Engine, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    role = f"pb_app_{secrets.token_hex(4)}"
    with engine.begin() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
    app: Engine | None = None
    try:
        monkeypatch.setenv("PANICBUTTON_DATABASE_URL", pg_url)
        said = db_command("grant", role)
        assert f"granted {role}: SELECT and INSERT on log_entries, log_checkpoints" in said

        app_url = make_url(pg_url).set(username=role).render_as_string(hide_password=False)
        app = make_engine(app_url)
        with app.connect() as conn:
            assert conn.scalar(text("SELECT current_user")) == role
        maker = sessions(app)
        heartbeats(maker, 3)
        with maker.begin() as s:
            s.add(LogCheckpoint(size=3, at=T0, note="stand-in note\n"))
        assert numbers(app) == [0, 1, 2]

        for table in ("log_entries", "log_checkpoints"):
            for statement in (
                f"UPDATE {table} SET at = at + interval '1 hour'",
                f"DELETE FROM {table}",
                f"TRUNCATE {table}",
            ):
                with pytest.raises(DBAPIError) as caught, app.begin() as conn:
                    conn.execute(text(statement))
                error = pg_error(caught)
                assert isinstance(error, psycopg.errors.InsufficientPrivilege), statement
                assert f"permission denied for table {table}" in str(error), statement

        # Appending still works, and nothing was changed or lost by the refused attempts.
        heartbeats(maker, 1, start=T0 + timedelta(minutes=1))
        assert numbers(app) == [0, 1, 2, 3]
        assert head_size(app) == 4

        # The owner has every privilege, but the triggers refuse it all the same.
        for table in ("log_entries", "log_checkpoints"):
            for statement in (
                f"UPDATE {table} SET at = at + interval '1 hour'",
                f"DELETE FROM {table}",
                f"TRUNCATE {table}",
            ):
                with pytest.raises(DBAPIError) as caught, engine.begin() as conn:
                    conn.execute(text(statement))
                assert "the incident log is append-only" in str(pg_error(caught)), statement
        assert numbers(engine) == [0, 1, 2, 3]
    finally:
        if app is not None:
            app.dispose()
        with engine.begin() as conn:
            conn.execute(text(f'REASSIGN OWNED BY "{role}" TO postgres'))
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))


# -- 2. concurrency ---------------------------------------------------------------------
class AbandonedError(Exception):
    """Raised inside a transaction after audit() to make it roll back."""


def test_twenty_concurrent_writers_get_gapless_numbers(
    engine: Engine, pg_url: str, tmp_path: Path
) -> None:
    writers, transactions = 20, 10
    # NOTE: a pool as large as the writers (make_engine keeps SQLAlchemy's 5 + 10), so
    # all twenty really are in their transactions at once; the audit hooks sit on the
    # Session class and run the same on any engine.
    busy = create_engine(pg_url, pool_size=writers, max_overflow=0, pool_pre_ping=True)
    maker = sessions(busy)
    barrier = threading.Barrier(writers)
    assert head_size(engine) == 0

    def writer(w: int) -> tuple[int, int, int]:
        """Returns (entries committed, transactions abandoned, duplicate keys refused)."""
        committed = abandoned = refused = 0
        barrier.wait()
        for t in range(transactions):
            at = datetime.now(UTC)
            if t == 4 and w % 5 == 0:
                # Raises after audit(): rolled back, so it must take no number.
                try:
                    with maker.begin() as s:
                        audit(s, at=at, type="log.heartbeat")
                        audit(s, at=at, type="log.heartbeat")
                        raise AbandonedError
                except AbandonedError:
                    abandoned += 1
                continue
            if t == 7 and w % 4 == 0:
                # Five writers append under one idempotency key: one wins, the others
                # fail at commit, after numbering, and must give their numbers back.
                try:
                    with maker.begin() as s:
                        audit(s, at=at, type="log.heartbeat")
                        audit(s, at=at, type="log.heartbeat", key="drill:one-of-five")
                except IntegrityError:
                    refused += 1
                else:
                    committed += 2
                continue
            count = 1 + (w + t) % 3
            with maker.begin() as s:
                for _ in range(count):
                    audit(s, at=at, type="log.heartbeat")
            committed += count
        return committed, abandoned, refused

    try:
        with ThreadPoolExecutor(max_workers=writers) as pool:
            results = [
                f.result(timeout=60) for f in [pool.submit(writer, w) for w in range(writers)]
            ]
    finally:
        busy.dispose()

    total = sum(r[0] for r in results)
    assert sum(r[1] for r in results) == 4
    assert sum(r[2] for r in results) == 4
    assert numbers(engine) == list(range(total))
    assert head_size(engine) == total
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).where(LogEntry.key == "drill:one-of-five")) == 1

    keeper = make_keeper(engine, tmp_path)
    cp = keeper.sign()
    assert cp.size == total
    report, parsed = integrity.verify_full(bodies(engine), [cp.note], keeper.key)
    assert report.size == total
    assert report.root == cp.root
    assert [e.n for e in parsed] == list(range(total))


# -- 3. a redelivered alert -------------------------------------------------------------
def test_duplicate_alert_id_gives_one_entry(engine: Engine, tmp_path: Path) -> None:
    maker = sessions(engine)
    room = SITE.room_for_device("unit-1")
    assert room is not None
    alert_ids = []
    for seq in range(1, 6):
        alert = Alert(device_id="unit-1", alert_id=new_alert_id(), seq=seq, pressed_at=T0)
        alert_ids.append(alert.alert_id)
        barrier = threading.Barrier(2)

        def deliver(alert: Alert = alert, barrier: threading.Barrier = barrier) -> str:
            with maker() as s:
                barrier.wait()
                try:
                    with s.begin():
                        result = incidents.record_alert(
                            session=s, site=SITE, room=room, alert=alert, now=T0
                        )
                except IntegrityError:
                    return "refused"
                return "new" if result.new else "existing"

        with ThreadPoolExecutor(max_workers=2) as pool:
            outcomes = sorted(f.result(timeout=30) for f in [pool.submit(deliver) for _ in "ab"])
        assert outcomes in (["new", "refused"], ["existing", "new"]), outcomes

    total = head_size(engine)
    assert numbers(engine) == list(range(total))
    with engine.connect() as conn:
        raised = list(
            conn.scalars(
                select(LogEntry.body).where(LogEntry.type == "alert.raised").order_by(LogEntry.n)
            )
        )
        assert conn.scalar(select(func.count()).select_from(Incident)) == 5
    assert [canonical.loads(b)["data"]["alert_id"] for b in raised] == alert_ids

    keeper = make_keeper(engine, tmp_path)
    keeper.sign()
    with sessions(engine)() as s:
        assert verify_stored(s, keeper.key).size == total


# -- 4. tamper drills as superuser ------------------------------------------------------
@dataclass
class History:
    engine: Engine
    keeper: Keeper
    raised: int  # n of the alert.raised entry
    queued: int  # n of the first page.queued entry
    acknowledged: int  # n of the incident.acknowledged entry


@pytest.fixture
def history(engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> History:
    """Heartbeats, an alert paged and acknowledged by reception, heartbeats; signed,
    and verified clean by the inspector before anyone tampers with it."""
    maker = sessions(engine)
    heartbeats(maker, 3)
    room = SITE.room_for_device("unit-1")
    assert room is not None
    alert = Alert(device_id="unit-1", alert_id=new_alert_id(), seq=1, pressed_at=T0)
    pressed = T0 + timedelta(seconds=5)
    with maker.begin() as s:
        result = incidents.record_alert(session=s, site=SITE, room=room, alert=alert, now=pressed)
    with maker.begin() as s:
        assert incidents.acknowledge(
            session=s,
            incident=s.get_one(Incident, result.incident.id),
            staff_id="reception",
            via="sms",
            now=pressed + timedelta(seconds=40),
        )
    heartbeats(maker, 3, start=pressed + timedelta(minutes=1))
    keeper = make_keeper(engine, tmp_path)
    keeper.sign()

    def first(type_: str) -> int:
        with engine.connect() as conn:
            n = conn.scalar(select(func.min(LogEntry.n)).where(LogEntry.type == type_))
        assert n is not None
        return n

    status, printed = export_and_verify(engine, keeper, tmp_path / "before", capsys)
    assert status == verify.OK, printed
    return History(
        engine=engine,
        keeper=keeper,
        raised=first("alert.raised"),
        queued=first("page.queued"),
        acknowledged=first("incident.acknowledged"),
    )


def assert_named(history: History, k: int, bundle: Path, capsys: Any) -> None:
    """The inspector's verifier, and the server's own nightly check, both name entry k."""
    status, printed = export_and_verify(history.engine, history.keeper, bundle, capsys)
    assert status == verify.FAILED, printed
    assert f"FAILED: entry {k}:" in printed
    with sessions(history.engine)() as s, pytest.raises(verdict.VerificationError) as caught:
        verify_stored(s, history.keeper.key)
    assert caught.value.entry == k


def test_edit_under_replica_replication_role_is_named_by_the_verifier(
    history: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    k = history.raised
    assert k < history.acknowledged  # entries follow it, so the next one names it

    def later(entry: dict[str, Any]) -> None:
        # The alert made to look as if it came in five minutes later.
        entry["at"] = spec.format_time(spec.parse_time(entry["at"]) + timedelta(minutes=5))

    rewrite_as_superuser(history.engine, k, later)
    assert_named(history, k, tmp_path / "after", capsys)


def test_delete_with_user_triggers_disabled_is_named_by_the_verifier(
    history: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    k = history.queued
    engine = history.engine
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE log_entries DISABLE TRIGGER USER"))
        assert conn.execute(text("DELETE FROM log_entries WHERE n = :n"), {"n": k}).rowcount == 1
        conn.execute(text("ALTER TABLE log_entries ENABLE TRIGGER USER"))
    # The triggers are back: the owner is refused again.
    with pytest.raises(DBAPIError) as caught, engine.begin() as conn:
        conn.execute(text("DELETE FROM log_entries WHERE n = 0"))
    assert "append-only" in str(pg_error(caught))

    assert_named(history, k, tmp_path / "after", capsys)


def test_changed_acknowledging_staff_is_named_by_the_verifier(
    history: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    k = history.acknowledged

    def someone_else(entry: dict[str, Any]) -> None:
        assert entry["type"] == "incident.acknowledged"
        assert entry["data"]["staff"] == "reception"
        entry["data"]["staff"] = "floor"

    rewrite_as_superuser(history.engine, k, someone_else)
    assert_named(history, k, tmp_path / "after", capsys)


# -- 5. an older backup restored --------------------------------------------------------
def psql_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def dump_log(url: str, path: Path) -> Callable[[], None]:
    """Back up the log's tables; returns how to restore them (pg_dump and psql when
    installed, else a copy of their rows)."""
    pg_dump, psql = shutil.which("pg_dump"), shutil.which("psql")
    if pg_dump and psql:
        subprocess.run(
            [
                pg_dump,
                "--data-only",
                "--disable-triggers",
                *(f"--table={t}" for t in LOG_TABLES),
                f"--file={path}",
                psql_url(url),
            ],
            check=True,
            capture_output=True,
        )

        def restore() -> None:
            subprocess.run(
                [
                    psql,
                    "-X",
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "--single-transaction",
                    f"--file={path}",
                    psql_url(url),
                ],
                check=True,
                capture_output=True,
            )

        return restore

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = {
                t: [dict(r._mapping) for r in conn.execute(text(f"SELECT * FROM {t}"))]
                for t in LOG_TABLES
            }
    finally:
        engine.dispose()

    def copy_back() -> None:
        engine = create_engine(url)
        try:
            with engine.begin() as conn:
                conn.execute(text("SET LOCAL session_replication_role = replica"))
                for model in (LogEntry, LogCheckpoint, LogState):
                    conn.execute(insert(model), rows[model.__tablename__])
        finally:
            engine.dispose()

    return copy_back


def test_restoring_an_older_dump_is_caught_by_the_trusted_checkpoint(
    engine: Engine, pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    maker = sessions(engine)
    keeper = make_keeper(engine, tmp_path)
    heartbeats(maker, 5)
    assert keeper.sign().size == 5
    restore = dump_log(pg_url, tmp_path / "log-dump.sql")

    heartbeats(maker, 3, start=T0 + timedelta(minutes=1))
    newer = keeper.sign()
    assert newer.size == 8
    # The inspector's trusted copy: the checkpoint file kept outside the database.
    lines = keeper.checkpoint_file.read_text().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[-1]) == newer.note

    # The older backup restored over the live log, by a superuser.
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        for model in (LogEntry, LogCheckpoint, LogState):
            conn.execute(delete(model))
    restore()
    assert numbers(engine) == [0, 1, 2, 3, 4]
    assert head_size(engine) == 5

    # On its own the older copy is a consistent, signed log ...
    status, printed = export_and_verify(engine, keeper, tmp_path / "alone", capsys)
    assert status in (verify.OK, verify.FINDINGS), printed
    assert "verified: 5 entries" in printed
    # ... but not the log the inspector was shown before.
    status, printed = export_and_verify(
        engine,
        keeper,
        tmp_path / "against-trusted",
        capsys,
        "--trusted",
        str(keeper.checkpoint_file),
    )
    assert status == verify.FAILED, printed
    assert "the trusted checkpoint covers 8 entries but the log has only 5" in printed
    assert "older copy of the log (a restored backup?)" in printed


def test_the_log_head_cannot_be_rewound(engine: Engine) -> None:
    """Rewinding the head's size would make every later append fail on a number already
    taken: no alarm could be recorded. The trigger refuses it, for the owner too."""
    heartbeats(sessions(engine), 3)
    with pytest.raises(DBAPIError) as caught, engine.begin() as conn:
        conn.execute(text("UPDATE log_state SET size = size - 1 WHERE id = 1"))
    assert "the incident log head cannot shrink (3 to 2)" in str(pg_error(caught))
    heartbeats(sessions(engine), 1)
    assert numbers(engine) == [0, 1, 2, 3]


def test_the_log_head_row_cannot_be_deleted(engine: Engine) -> None:
    """Without its one row no change could be logged, so none could commit."""
    with pytest.raises(DBAPIError) as caught, engine.begin() as conn:
        conn.execute(text("DELETE FROM log_state"))
    assert "append-only: DELETE on log_state is refused" in str(pg_error(caught))
    with pytest.raises(DBAPIError), engine.begin() as conn:
        conn.execute(text("TRUNCATE log_state"))
    heartbeats(sessions(engine), 1)
    assert numbers(engine) == [0]
