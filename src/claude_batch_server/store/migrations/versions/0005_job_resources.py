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
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("cpu_seconds", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("memory_peak_bytes", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("memory_peak_bytes")
        batch.drop_column("cpu_seconds")
