"""Database engine and migrations: SQLite (WAL) by default, PostgreSQL with the same code."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Engine,
    Executable,
    create_engine,
    event,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.util import asbool

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger(__name__)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, full sync, foreign keys and a busy timeout.

    A SQLite file is made private (mode 600) before SQLite opens it. Statement
    parameters never show in an error (so never in a log): they are names, numbers
    and notes.
    """
    if url.startswith("sqlite"):
        file = _sqlite_file(url)
        if file is not None:
            make_private(file)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            hide_parameters=True,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # NOTE: FULL, not NORMAL: an incident confirmed to the room unit must
            # survive a power cut, or the unit would stop resending a lost alert.
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, hide_parameters=True)


def _sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names, also in URI form (``sqlite:///file:PATH?uri=true``);
    None for a database in memory."""
    parts = make_url(url)
    database = parts.database
    if not database or database == ":memory:":
        return None
    if database.startswith("file:") and asbool(parts.query.get("uri", False)):
        if parts.query.get("mode") == "memory":
            return None
        path = unquote(urlsplit(database).path)
        return Path(path) if path and path != ":memory:" else None
    return Path(database)


def make_private(path: Path) -> None:
    """Create the SQLite file ``path`` with mode 600, or tighten an existing one (and
    its ``-wal``/``-shm``) with a warning: it holds names, phone numbers and notes.

    NOTE: SQLite creates ``-wal`` and ``-shm`` with the main file's mode, so a
    private main file made before SQLite first opens it keeps them private too.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        os.close(fd)  # an empty file is a valid, empty SQLite database
        return
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            file.chmod(mode & 0o700)
            log.warning(
                "database file %s was readable by others (mode %o); made it private (%o)",
                file,
                mode,
                mode & 0o700,
            )


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (idempotent)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        before = MigrationContext.configure(conn).get_current_revision()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        after = MigrationContext.configure(conn).get_current_revision()
    if after != before:
        # Alembic's own INFO lines are kept quiet (panicbutton/cli.py): one line instead.
        log.info("database schema upgraded from %s to %s", before or "empty", after)


def sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def changed(session: Session, statement: Executable) -> int:
    """Run an UPDATE or DELETE in ``session``; the number of rows it changed (how a
    conditional UPDATE tells which of two racing threads or servers won)."""
    return cast("CursorResult[Any]", session.execute(statement)).rowcount


def claim(
    session: Session,
    table: Any,
    *where: ColumnElement[bool],
    values: dict[str, Any],
    order_by: tuple[Any, ...] = (),
    limit: int | None = None,
) -> list[int]:
    """Claim rows of ``table`` matching ``where`` by setting ``values``; the ids won.

    On PostgreSQL the rows are selected ``FOR UPDATE SKIP LOCKED``: a row another
    instance is claiming at this moment is left to it, nobody waits on its lock.
    Elsewhere (SQLite: one writer at a time) each is taken by a conditional UPDATE,
    which tells which of two racing workers won.
    """
    chosen = select(table.id).where(*where).order_by(*order_by).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        ids = list(session.scalars(chosen.with_for_update(skip_locked=True)))
        if ids:
            session.execute(update(table).where(table.id.in_(ids)).values(**values))
        return ids
    return [
        row_id
        for row_id in list(session.scalars(chosen))
        if changed(session, update(table).where(table.id == row_id, *where).values(**values))
    ]
