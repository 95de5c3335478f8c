"""The mobile button after its security review: a check-in session's duress alarm kept
apart from its missed check-out alarm (one of each per session at most), and a
position's time as the phone sent it (a request sent again is refused).

Check-in sessions whose ``alert_id`` holds a duress alarm's id have it moved to
``duress_alert_id``; positions kept before take their kept time as the one sent.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("mobile_checkins") as batch:
        batch.add_column(sa.Column("duress_alert_id", sa.String(32), nullable=True))
    op.execute(
        "UPDATE mobile_checkins SET duress_alert_id = alert_id, alert_id = NULL "
        "WHERE alert_id IN (SELECT alert_id FROM incidents WHERE kind = 'duress')"
    )
    with op.batch_alter_table("mobile_positions") as batch:
        batch.add_column(sa.Column("sent_taken_at", TIME, nullable=True))
    op.execute("UPDATE mobile_positions SET sent_taken_at = taken_at")
    with op.batch_alter_table("mobile_positions") as batch:
        batch.alter_column("sent_taken_at", existing_type=TIME, nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("mobile_positions") as batch:
        batch.drop_column("sent_taken_at")
    # A session that raised both keeps its missed check-out alarm's id (as before 0014).
    op.execute(
        "UPDATE mobile_checkins SET alert_id = duress_alert_id "
        "WHERE alert_id IS NULL AND duress_alert_id IS NOT NULL"
    )
    with op.batch_alter_table("mobile_checkins") as batch:
        batch.drop_column("duress_alert_id")
