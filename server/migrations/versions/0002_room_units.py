"""Re-press counts on incidents; room unit health and offline alerting.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("presses", sa.Integer(), nullable=False, server_default="1"))
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("offline_since", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("offline_alerted", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("error", sa.String(200), nullable=False, server_default=""))
        batch.add_column(sa.Column("uptime", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("outbox", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("version", sa.String(32), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        for column in ("version", "outbox", "uptime", "error", "offline_alerted", "offline_since"):
            batch.drop_column(column)
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("presses")
