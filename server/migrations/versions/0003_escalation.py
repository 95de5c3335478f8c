"""Escalation: frozen plans, persisted jobs, calls' provider status, duty overrides, opt-outs.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("plan", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("round", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("pages") as batch:
        batch.add_column(sa.Column("provider_status", sa.String(24), nullable=True))
    op.create_table(
        "escalation_jobs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("incident_id", sa.Integer(), sa.ForeignKey("incidents.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("incident_id", "kind", "step"),
    )
    op.create_index("ix_escalation_jobs_incident_id", "escalation_jobs", ["incident_id"])
    op.create_index("ix_escalation_jobs_due_at", "escalation_jobs", ["due_at"])
    op.create_index("ix_escalation_jobs_status", "escalation_jobs", ["status"])
    op.create_table(
        "duty_overrides",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("staff_id", sa.String(63), nullable=False, index=True),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "staff_state",
        sa.Column("staff_id", sa.String(63), primary_key=True),
        sa.Column("sms_opted_out", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("staff_state")
    op.drop_table("duty_overrides")
    op.drop_table("escalation_jobs")
    with op.batch_alter_table("pages") as batch:
        batch.drop_column("provider_status")
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("round")
        batch.drop_column("plan")
