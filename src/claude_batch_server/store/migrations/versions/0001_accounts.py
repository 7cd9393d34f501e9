"""Accounts: revoked tokens, login throttles, audit events.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), autoincrement=True, primary_key=True),
        sa.Column("time", UTC_TIME, nullable=False, index=True),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
    )
    op.create_index("ix_audit_user_time", "audit_events", ["user", "time"])
    op.create_table(
        "login_throttles",
        sa.Column("scope", sa.String(16), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure", UTC_TIME, nullable=False),
        sa.Column("blocked_until", UTC_TIME, nullable=True),
    )
    op.create_table(
        "revoked_tokens",
        sa.Column("jti", sa.String(64), primary_key=True),
        sa.Column("expires_at", UTC_TIME, nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("revoked_tokens")
    op.drop_table("login_throttles")
    op.drop_table("audit_events")
