"""Pages are found by their provider id: a status callback of a bundle of many pages
names only the first pages in its URL, and the rest are found by the message or call id.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_pages_provider_sid", "pages", ["provider_sid"])


def downgrade() -> None:
    op.drop_index("ix_pages_provider_sid", table_name="pages")
