"""Repository names per user: a repository is keyed by an id, its name unique per owner.

A repository registered before keeps its name as its id: the name was unique server-wide
and is what its stored tree, kept trees and workspace records are filed under in DATA_DIR,
so they are all found as they are. Jobs point at the id; theirs is the name they had.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UTC_TIME = sa.DateTime(timezone=True)
KEPT = (  # the columns of 0002, copied as they are
    "name",
    "git_url",
    "description",
    "branch",
    "commit",
    "status",
    "error",
    "registered_by",
    "registered_at",
    "last_pull",
    "size",
)


def upgrade() -> None:
    # A new primary key: copied into a new table, for SQLite cannot alter one in place.
    op.create_table(
        "repositories_new",
        sa.Column("id", sa.String(100), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("git_url", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("branch", sa.String(255), nullable=True),
        sa.Column("commit", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("registered_by", sa.String(255), nullable=False),
        sa.Column("registered_at", UTC_TIME, nullable=False),
        sa.Column("last_pull", UTC_TIME, nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        # named, for the old table's default name is taken until it is dropped
        sa.PrimaryKeyConstraint("id", name="pk_repositories"),
        sa.UniqueConstraint("registered_by", "name", name="uq_repositories_owner"),
    )
    op.execute(_copy("repositories", "repositories_new", ("name", *KEPT), ("id", *KEPT)))
    op.drop_index("ix_repositories_registered_by", table_name="repositories")
    op.drop_table("repositories")
    op.rename_table("repositories_new", "repositories")

    # Added with a default, not by recreating the table: on SQLite that would drop `jobs`,
    # and with it (foreign keys on) every job's events.
    op.add_column(
        "jobs",
        sa.Column("repository_id", sa.String(100), nullable=False, server_default=""),
    )
    op.execute("UPDATE jobs SET repository_id = repository")
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("jobs", "repository_id", server_default=None)
    op.drop_index("ix_jobs_repository", table_name="jobs")
    op.create_index("ix_jobs_repository_id", "jobs", ["repository_id"])


def downgrade() -> None:
    # Only while no two users have a repository of the same name: names were server-wide.
    op.drop_index("ix_jobs_repository_id", table_name="jobs")
    op.create_index("ix_jobs_repository", "jobs", ["repository"])
    op.drop_column("jobs", "repository_id")  # in place (SQLite 3.35 on), as above
    op.create_table(
        "repositories_old",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("git_url", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("branch", sa.String(255), nullable=True),
        sa.Column("commit", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("registered_by", sa.String(255), nullable=False),
        sa.Column("registered_at", UTC_TIME, nullable=False),
        sa.Column("last_pull", UTC_TIME, nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("name", name="repositories_pkey"),  # its name in 0002
    )
    op.execute(_copy("repositories", "repositories_old", KEPT, KEPT))
    op.drop_table("repositories")
    op.rename_table("repositories_old", "repositories")
    op.create_index("ix_repositories_registered_by", "repositories", ["registered_by"])


def _copy(source: str, target: str, read: tuple[str, ...], write: tuple[str, ...]) -> sa.Insert:
    """INSERT INTO target (write…) SELECT read… FROM source, its names quoted (`commit`)."""
    old = sa.table(source, *(sa.column(name) for name in set(read)))
    new = sa.table(target, *(sa.column(name) for name in write))
    return new.insert().from_select(list(write), sa.select(*(old.c[name] for name in read)))
