"""The mobile button: enrolled phones, check-in sessions, positions shared in an alarm.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "mobile_phones",
        sa.Column("id", sa.String(24), primary_key=True),
        sa.Column("person_id", sa.String(63), sa.ForeignKey("people.id"), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("number", sa.String(16), nullable=False),
        sa.Column("fallback_sha256", sa.String(64), nullable=False),
        sa.Column("pin_hash", sa.String(200), nullable=False),
        sa.Column("duress_hash", sa.String(200), nullable=False),
        sa.Column("label", sa.String(60), nullable=False),
        sa.Column("created_by", sa.String(63), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("last_seen_at", TIME, nullable=True),
        sa.Column("pin_failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("pin_locked_until", TIME, nullable=True),
        sa.Column("revoked_at", TIME, nullable=True),
        sa.Column("revoked_by", sa.String(63), nullable=True),
    )
    op.create_index("ix_mobile_phones_person_id", "mobile_phones", ["person_id"])
    op.create_index("ix_mobile_phones_number", "mobile_phones", ["number"])
    op.create_index("ix_mobile_phones_revoked_at", "mobile_phones", ["revoked_at"])
    op.create_table(
        "mobile_checkins",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("phone_id", sa.String(24), sa.ForeignKey("mobile_phones.id"), nullable=False),
        sa.Column("person_id", sa.String(63), sa.ForeignKey("people.id"), nullable=False),
        sa.Column("client_id", sa.String(32), nullable=False),
        sa.Column("started_at", TIME, nullable=False),
        sa.Column("ends_at", TIME, nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reminders", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("closed_at", TIME, nullable=True),
        sa.Column("alert_id", sa.String(32), nullable=True),
        sa.Column("presence_id", sa.Integer(), nullable=True),
        sa.UniqueConstraint("phone_id", "client_id"),
    )
    op.create_index("ix_mobile_checkins_phone_id", "mobile_checkins", ["phone_id"])
    op.create_index("ix_mobile_checkins_person_id", "mobile_checkins", ["person_id"])
    op.create_index("ix_mobile_checkins_ends_at", "mobile_checkins", ["ends_at"])
    op.create_index("ix_mobile_checkins_state", "mobile_checkins", ["state"])
    op.create_table(
        "mobile_positions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("incident_id", sa.Integer(), sa.ForeignKey("incidents.id"), nullable=False),
        sa.Column("phone_id", sa.String(24), nullable=False),
        sa.Column("latitude", sa.Float(), nullable=False),
        sa.Column("longitude", sa.Float(), nullable=False),
        sa.Column("accuracy", sa.Float(), nullable=False),
        sa.Column("taken_at", TIME, nullable=False),
        sa.Column("received_at", TIME, nullable=False),
        sa.UniqueConstraint("incident_id", "taken_at"),
    )
    op.create_index("ix_mobile_positions_incident_id", "mobile_positions", ["incident_id"])
    op.create_index("ix_mobile_positions_received_at", "mobile_positions", ["received_at"])


def downgrade() -> None:
    op.drop_table("mobile_positions")
    op.drop_table("mobile_checkins")
    op.drop_table("mobile_phones")
