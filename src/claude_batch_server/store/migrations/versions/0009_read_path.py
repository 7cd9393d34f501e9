"""The read path: when each token was revoked, so that every process can read the
revocations it has not seen yet (auth/tokens.py); the first page of a user's jobs
served by one index, in its order (newest first, ties by id).

Revision ID: 0009
Revises: 0006
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # rows of before: long enough ago that only a full load reads them, as every start does
    op.add_column(
        "revoked_tokens",
        sa.Column(
            "revoked_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("'1970-01-01 00:00:00'"),
        ),
    )
    op.create_index("ix_revoked_tokens_revoked_at", "revoked_tokens", ["revoked_at"])
    op.create_index("ix_jobs_user_created_id", "jobs", ["user", "created_at", "id"])
    op.drop_index("ix_jobs_user_created", "jobs")


def downgrade() -> None:
    op.create_index("ix_jobs_user_created", "jobs", ["user", "created_at"])
    op.drop_index("ix_jobs_user_created_id", "jobs")
    op.drop_index("ix_revoked_tokens_revoked_at", "revoked_tokens")
    op.drop_column("revoked_tokens", "revoked_at")
