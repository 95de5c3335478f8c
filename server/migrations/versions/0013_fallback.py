"""The mobile button's fallbacks: the alarm a phone last raised by SMS or call, so that
who is coming is texted to it when staff take that alarm.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("mobile_phones") as batch:
        batch.add_column(sa.Column("fallback_alert", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mobile_phones") as batch:
        batch.drop_column("fallback_alert")
