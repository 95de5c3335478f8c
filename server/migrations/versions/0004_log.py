"""The tamper-evident incident log: entries, head, checkpoints, personal data apart.

Existing audit events are carried over, in order, as the first log entries.
On PostgreSQL, triggers refuse UPDATE, DELETE and TRUNCATE on the log's tables
(for every role, owner included); `panicbutton db grant` gives the application
role SELECT and INSERT only. A superuser can still get around triggers
(`session_replication_role = replica`, `ALTER TABLE ... DISABLE TRIGGER`): the
signed checkpoints and the verifier are what catch that.

Revision ID: 0004
Revises: 0003
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from panicbutton.log import spec

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

APPEND_ONLY = ("log_entries", "log_checkpoints")


def upgrade() -> None:
    op.create_table(
        "log_entries",
        sa.Column("n", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("type", sa.String(48), nullable=False, index=True),
        sa.Column("incident_id", sa.Integer(), nullable=True, index=True),
        sa.Column("key", sa.String(96), nullable=True, unique=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
    )
    log_state = op.create_table(
        "log_state",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("frontier", sa.LargeBinary(), nullable=False),
        sa.Column("last_leaf", sa.LargeBinary(), nullable=False),
    )
    op.create_table(
        "log_checkpoints",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("size", sa.Integer(), nullable=False, index=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
    )
    op.create_table(
        "personal_data",
        sa.Column("ref", sa.String(40), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False, index=True),
        sa.Column("salt", sa.LargeBinary(), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("subjects", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("purge_after", sa.DateTime(timezone=True), nullable=False, index=True),
    )
    tree, last = _carry_over_audit_events()
    op.bulk_insert(
        log_state,
        [{"id": 1, "size": tree.size, "frontier": b"".join(tree.hashes), "last_leaf": last}],
    )
    op.drop_table("audit_events")
    if op.get_bind().dialect.name == "postgresql":
        _append_only_triggers()
        _head_triggers()


def _carry_over_audit_events() -> tuple[spec.Frontier, bytes]:
    bind = op.get_bind()
    old = sa.table(
        "audit_events",
        sa.column("id", sa.Integer()),
        sa.column("at", sa.DateTime(timezone=True)),
        sa.column("type", sa.String()),
        sa.column("incident_id", sa.Integer()),
        sa.column("data", sa.JSON()),
    )
    entries = sa.table(
        "log_entries",
        sa.column("n", sa.Integer()),
        sa.column("at", sa.DateTime(timezone=True)),
        sa.column("type", sa.String()),
        sa.column("incident_id", sa.Integer()),
        sa.column("key", sa.String()),
        sa.column("body", sa.LargeBinary()),
    )
    tree, last = spec.Frontier(), spec.GENESIS
    for row in bind.execute(sa.select(old).order_by(old.c.id)):
        at = row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC)
        body = spec.entry_bytes(
            n=tree.size,
            at=at,
            type_=row.type,
            incident=row.incident_id,
            data=_log_times(row.data),
            prev=last,
        )
        key = f"alert:{row.data['alert_id']}" if row.type == "alert.raised" else None
        bind.execute(
            sa.insert(entries).values(
                n=tree.size, at=at, type=row.type, incident_id=row.incident_id, key=key, body=body
            )
        )
        last = spec.leaf_hash(body)
        tree.append(last)
    return tree, last


#: Fields that held times in Python's isoformat() before the log had a time format.
TIME_FIELDS = ("device_time", "due", "since", "until", "start", "end")


def _log_times(data: dict[str, object]) -> dict[str, object]:
    """``data`` with its times in the log's one form (``spec.format_time``)."""
    out = dict(data)
    for name in TIME_FIELDS:
        value = out.get(name)
        if isinstance(value, str):
            at = datetime.fromisoformat(value)
            out[name] = spec.format_time(at if at.tzinfo else at.replace(tzinfo=UTC))
    return out


def _append_only_triggers() -> None:
    op.execute(
        """
        CREATE FUNCTION panicbutton_log_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'the incident log is append-only: % on % is refused',
                TG_OP, TG_TABLE_NAME
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )
    for table in APPEND_ONLY:
        op.execute(f"REVOKE UPDATE, DELETE, TRUNCATE ON {table} FROM PUBLIC")
        op.execute(
            f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION panicbutton_log_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION panicbutton_log_append_only()"
        )


def _head_triggers() -> None:
    # The head may only grow: rewinding its size would make every later append fail
    # on a number already taken (no alarm could be recorded).
    op.execute(
        """
        CREATE FUNCTION panicbutton_log_head_grows() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.size < OLD.size THEN
                RAISE EXCEPTION 'the incident log head cannot shrink (% to %)',
                    OLD.size, NEW.size USING ERRCODE = 'insufficient_privilege';
            END IF;
            RETURN NEW;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER log_state_grows BEFORE UPDATE ON log_state "
        "FOR EACH ROW EXECUTE FUNCTION panicbutton_log_head_grows()"
    )
    op.execute("REVOKE DELETE, TRUNCATE ON log_state FROM PUBLIC")
    # Its one row may not go either: without it no change could be logged, nor committed.
    op.execute(
        "CREATE TRIGGER log_state_no_delete BEFORE DELETE ON log_state "
        "FOR EACH ROW EXECUTE FUNCTION panicbutton_log_append_only()"
    )
    op.execute(
        "CREATE TRIGGER log_state_no_truncate BEFORE TRUNCATE ON log_state "
        "FOR EACH STATEMENT EXECUTE FUNCTION panicbutton_log_append_only()"
    )


def downgrade() -> None:
    raise NotImplementedError("the incident log cannot be migrated down: it would be lost")
