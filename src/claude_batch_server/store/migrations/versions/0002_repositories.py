"""Repositories.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "repositories",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("git_url", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("branch", sa.String(255), nullable=True),
        sa.Column("commit", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("registered_by", sa.String(255), nullable=False, index=True),
        sa.Column("registered_at", UTC_TIME, nullable=False),
        sa.Column("last_pull", UTC_TIME, nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("repositories")
