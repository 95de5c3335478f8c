"""Personal data no longer stores a purge date: retention is counted from each row's
creation with the retention configured at purge time (so a shortened retention applies
to what is already kept), and ``purge_after`` was written but never read.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Batch mode: SQLite rebuilds the table to drop a column.
    with op.batch_alter_table("personal_data") as batch:
        batch.drop_index("ix_personal_data_purge_after")
        batch.drop_column("purge_after")


def downgrade() -> None:
    with op.batch_alter_table("personal_data") as batch:
        batch.add_column(sa.Column("purge_after", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_personal_data_purge_after", ["purge_after"])
    # Rows kept since: their purge date as 0004-0005 wrote it cannot be known (it came
    # from the retention of the day); their creation is a safe lower bound.
    op.execute("UPDATE personal_data SET purge_after = created_at WHERE purge_after IS NULL")
