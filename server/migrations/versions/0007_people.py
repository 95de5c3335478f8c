"""People: accounts and roles, passkeys, passwords with TOTP, enrolment links, web
sessions, personal API tokens, sign-in throttling, phone checks, the presence
register, the violence register with consents, and the site's live configuration.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "people",
        sa.Column("id", sa.String(63), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("phone", sa.String(16), nullable=True, unique=True),
        sa.Column("language", sa.String(2), nullable=False),
        sa.Column("phone_confirmed_at", WHEN, nullable=True),
        sa.Column("phone_problem", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("closed_at", WHEN, nullable=True),
    )
    op.create_table(
        "role_grants",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("person_id", sa.String(63), sa.ForeignKey("people.id"), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("granted_by", sa.String(63), nullable=False),
        sa.Column("granted_at", WHEN, nullable=False),
        sa.Column("expires_at", WHEN, nullable=True),
        sa.Column("revoked_at", WHEN, nullable=True),
    )
    op.create_index("ix_role_grants_person_id", "role_grants", ["person_id"])
    op.create_table(
        "passkeys",
        sa.Column("id", sa.String(1400), primary_key=True),
        sa.Column("person_id", sa.String(63), sa.ForeignKey("people.id"), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("sign_count", sa.Integer(), nullable=False),
        sa.Column("transports", sa.JSON(), nullable=False),
        sa.Column("label", sa.String(60), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("last_used_at", WHEN, nullable=True),
    )
    op.create_index("ix_passkeys_person_id", "passkeys", ["person_id"])
    op.create_table(
        "passwords",
        sa.Column("person_id", sa.String(63), sa.ForeignKey("people.id"), primary_key=True),
        sa.Column("hash", sa.String(200), nullable=False),
        sa.Column("changed_at", WHEN, nullable=False),
        sa.Column("totp_secret", sa.String(64), nullable=True),
        sa.Column("totp_last_step", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_table(
        "enrolment_links",
        sa.Column("token_sha256", sa.String(64), primary_key=True),
        sa.Column("person_id", sa.String(63), sa.ForeignKey("people.id"), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(63), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("expires_at", WHEN, nullable=False),
        sa.Column("used_at", WHEN, nullable=True),
    )
    op.create_index("ix_enrolment_links_person_id", "enrolment_links", ["person_id"])
    op.create_table(
        "web_sessions",
        sa.Column("id_sha256", sa.String(64), primary_key=True),
        sa.Column("person_id", sa.String(63), sa.ForeignKey("people.id"), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("agent_sha256", sa.String(64), nullable=False),
        sa.Column("method", sa.String(24), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("last_seen_at", WHEN, nullable=False),
        sa.Column("ended_at", WHEN, nullable=True),
    )
    op.create_index("ix_web_sessions_person_id", "web_sessions", ["person_id"])
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(24), primary_key=True),
        sa.Column("person_id", sa.String(63), sa.ForeignKey("people.id"), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("label", sa.String(60), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("expires_at", WHEN, nullable=False),
        sa.Column("revoked_at", WHEN, nullable=True),
        sa.Column("last_used_at", WHEN, nullable=True),
    )
    op.create_index("ix_api_tokens_person_id", "api_tokens", ["person_id"])
    op.create_table(
        "sign_in_failures",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("at", WHEN, nullable=False),
    )
    op.create_index("ix_sign_in_failures_key_at", "sign_in_failures", ["key", "at"])
    op.create_table(
        "phone_checks",
        sa.Column("person_id", sa.String(63), sa.ForeignKey("people.id"), primary_key=True),
        sa.Column("phone", sa.String(16), nullable=False),
        sa.Column("code_sha256", sa.String(64), nullable=False),
        sa.Column("sent_at", WHEN, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
    )
    op.create_table(
        "presence",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("person_id", sa.String(63), sa.ForeignKey("people.id"), nullable=False),
        sa.Column("room_id", sa.String(63), nullable=True),
        sa.Column("checked_in_at", WHEN, nullable=False),
        sa.Column("checked_out_at", WHEN, nullable=True),
        sa.Column("in_by", sa.String(63), nullable=False),
        sa.Column("out_by", sa.String(63), nullable=True),
    )
    op.create_index("ix_presence_person_id", "presence", ["person_id"])
    op.create_index("ix_presence_checked_in_at", "presence", ["checked_in_at"])
    op.create_index("ix_presence_checked_out_at", "presence", ["checked_out_at"])
    op.create_table(
        "violence_entries",
        sa.Column("incident_id", sa.Integer(), sa.ForeignKey("incidents.id"), primary_key=True),
        sa.Column("recorded_by", sa.String(63), nullable=False),
        sa.Column("recorded_at", WHEN, nullable=False),
        sa.Column("worker_id", sa.String(63), sa.ForeignKey("people.id"), nullable=True),
        sa.Column("account", sa.Text(), nullable=False),
    )
    op.create_index("ix_violence_entries_worker_id", "violence_entries", ["worker_id"])
    op.create_table(
        "consents",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("worker_id", sa.String(63), sa.ForeignKey("people.id"), nullable=False),
        sa.Column("incident_id", sa.Integer(), sa.ForeignKey("incidents.id"), nullable=False),
        sa.Column("given_at", WHEN, nullable=False),
        sa.Column("withdrawn_at", WHEN, nullable=True),
        sa.UniqueConstraint("worker_id", "incident_id"),
    )
    op.create_index("ix_consents_worker_id", "consents", ["worker_id"])
    op.create_table(
        "site_versions",
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("changed_by", sa.String(63), nullable=False),
        sa.Column("changed_at", WHEN, nullable=False),
        sa.Column("summary", sa.String(500), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "site_versions",
        "consents",
        "violence_entries",
        "presence",
        "phone_checks",
        "sign_in_failures",
        "api_tokens",
        "web_sessions",
        "enrolment_links",
        "passwords",
        "passkeys",
        "role_grants",
        "people",
    ):
        op.drop_table(table)
