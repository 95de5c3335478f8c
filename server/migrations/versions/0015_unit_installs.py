"""Room units installed from the server: one-time enrolment codes and install reports.

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "unit_enrolments",
        sa.Column("code_sha256", sa.String(64), primary_key=True),
        sa.Column("device_id", sa.String(63), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_by", sa.String(63), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("expires_at", TIME, nullable=False),
        sa.Column("redeemed_at", TIME, nullable=True),
    )
    op.create_index("ix_unit_enrolments_device_id", "unit_enrolments", ["device_id"])
    op.create_index("ix_unit_enrolments_expires_at", "unit_enrolments", ["expires_at"])
    op.create_table(
        "unit_installs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("device_id", sa.String(63), nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("result", sa.String(8), nullable=False),
        sa.Column("lines", sa.JSON(), nullable=False),
    )
    op.create_index("ix_unit_installs_device_id", "unit_installs", ["device_id"])


def downgrade() -> None:
    op.drop_table("unit_installs")
    op.drop_table("unit_enrolments")
