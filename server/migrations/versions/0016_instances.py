"""Several server instances on one database: who is alive, and who holds which claim.

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "server_instances",
        sa.Column("id", sa.String(63), primary_key=True),
        sa.Column("started_at", TIME, nullable=False),
        sa.Column("seen_at", TIME, nullable=False),
    )
    for table in ("pages", "escalation_jobs"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("claimed_by", sa.String(63), nullable=True))
            batch.add_column(sa.Column("lease_until", TIME, nullable=True))


def downgrade() -> None:
    for table in ("pages", "escalation_jobs"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("lease_until")
            batch.drop_column("claimed_by")
    op.drop_table("server_instances")
