"""Reception screens: each person's kiosk PIN (argon2id), to acknowledge at a screen.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kiosk_pins",
        sa.Column("person_id", sa.String(63), sa.ForeignKey("people.id"), primary_key=True),
        sa.Column("hash", sa.String(200), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("kiosk_pins")
