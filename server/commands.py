"""Administration commands behind ``panicbutton audit export`` and ``panicbutton db``."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import inspect, text

from panicbutton.clock import SystemClock
from server.db import make_engine, migrate, sessions
from server.errors import SettingsError
from server.log import export, personal
from server.log.keeper import LogFailedError, LogKeeper
from server.log.signing import load_signer
from server.settings import Settings
from server.site import ID_RE

#: The log's tables: the application role may read and append, nothing else.
APPEND_ONLY = ("log_entries", "log_checkpoints")
#: What the application role may do where it may not do everything.
RIGHTS = {
    **dict.fromkeys(APPEND_ONLY, "SELECT, INSERT"),
    "log_state": "SELECT, UPDATE",  # one row, made by the migration; may only grow
    "alembic_version": "SELECT",
}
ROLE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def export_to(
    settings: Settings,
    *,
    out: Path | None,
    scope: str,
    by: str | None,
    justification: str | None,
    with_personal: bool,
    report: str | None = None,
) -> tuple[Path, int]:
    """Log the export (who, why), sign the log, write the bundle; returns (path, entries)."""
    if out is None or not by or not justification or len(justification.strip()) < 8:
        raise ValueError(
            "an export needs --out, --by (who you are) and --justification (why, at least "
            "8 characters): the export is itself recorded in the log"
        )
    if not ID_RE.fullmatch(by):
        raise ValueError("--by: your pseudonymous id, in lowercase letters, digits and '-'")
    export.check_scope(scope)
    report_path = out.with_name(out.stem + f"-report.{report}") if report else None
    for path in (out, report_path):
        if path is not None and path.exists():
            raise ValueError(f"{path} exists: give a new name (an export never overwrites)")
    if settings.log_key_file is None:
        raise SettingsError("PANICBUTTON_LOG_KEY_FILE is not set: the export must be signed")
    signer = load_signer(settings.log_key_file)
    engine = make_engine(settings.database_url)
    try:
        maker = sessions(engine)
        now = SystemClock().now()
        with maker.begin() as s:
            personal.record(
                s,
                type="record.exported",
                kind="access",
                value={"justification": justification.strip()},
                subjects=[by],
                now=now,
                retention=settings.retention(),
                by=by,
                scope=scope,
            )
        keeper = LogKeeper(
            engine=engine,
            sessions=maker,
            signer=signer,
            checkpoint_file=settings.log_checkpoint_file,
            clock=SystemClock().now,
            retention=settings.retention(),
        )
        try:
            files = export.make_bundle(keeper, scope=scope, now=now, with_personal=with_personal)
        except LogFailedError as exc:
            raise ValueError(
                f"the incident log failed its check ({exc}); nothing was signed or exported. "
                "The failure is recorded in the log; see README 'When the log fails its check'"
            ) from None
    finally:
        engine.dispose()
    path = export.write_bundle(files, out)
    if report_path is not None and report is not None:
        body, _ = export.render_report(files, fmt=report, now=now)
        export.write_private(report_path, body)
    return path, files["entries.jsonl"].count(b"\n")


def db_command(action: str, role: str | None) -> str:
    """``migrate`` or ``grant ROLE``, with PANICBUTTON_DATABASE_URL; returns what was done."""
    settings = Settings(demo=True)  # only the database URL is needed here
    engine = make_engine(settings.database_url)
    try:
        if action == "migrate":
            migrate(engine)
            return "the database schema is up to date"
        if engine.dialect.name != "postgresql":
            raise ValueError("grant is for PostgreSQL; SQLite has no roles")
        if not role or not ROLE_RE.match(role):
            raise ValueError("grant needs the application's role name (lowercase, digits, _)")
        migrate(engine)
        tables = inspect(engine).get_table_names()
        with engine.begin() as conn:
            quoted = conn.dialect.identifier_preparer.quote(role)
            conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {quoted}"))
            for table in tables:
                rights = RIGHTS.get(table, "SELECT, INSERT, UPDATE, DELETE")
                # Revoke first: a grant run again must also take back what it no longer gives.
                conn.execute(text(f"REVOKE ALL ON {table} FROM {quoted}"))
                conn.execute(text(f"GRANT {rights} ON {table} TO {quoted}"))
                if table in APPEND_ONLY:
                    conn.execute(text(f"REVOKE UPDATE, DELETE, TRUNCATE ON {table} FROM {quoted}"))
            conn.execute(text(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {quoted}"))
        return (
            f"granted {role}: SELECT and INSERT on {', '.join(APPEND_ONLY)}; read and write on "
            "the other tables. Run the server as this role, never as the owner."
        )
    finally:
        engine.dispose()
