"""What jobs used, measured from their control groups.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Added with a default, not by recreating the table: on SQLite that would drop `jobs`,
    # and with it (foreign keys on) every job's events.
    op.add_column("jobs", sa.Column("cpu_seconds", sa.Float(), nullable=False, server_default="0"))
    op.add_column(
        "jobs",
        sa.Column("memory_peak_bytes", sa.BigInteger(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_column("jobs", "memory_peak_bytes")  # in place (SQLite 3.35 on)
    op.drop_column("jobs", "cpu_seconds")
