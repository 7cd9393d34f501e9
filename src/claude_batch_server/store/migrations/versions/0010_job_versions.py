"""Each user's count of changes to their jobs, kept by the database itself: a trigger on
`jobs` bumps it in the transaction of every insert, delete and update of a column that a
listing shows, whichever process or statement makes it, so that none can be missed
(api/listings.py reads it). Not counted: the leases' renewals, which one statement makes
for the jobs of many users, and whose bumps two servers could take in opposite orders.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_BUMP = """INSERT INTO job_versions ("user", version) VALUES ({row}."user", 1)
    ON CONFLICT ("user") DO UPDATE SET version = job_versions.version + 1;"""
# jobs/reading.py LISTED, as of this revision
_LISTED = (
    *("id", "user", "repository", "prompt", "status", "queued_at", "created_at"),
    *("started_at", "completed_at", "exit_code", "output", "error", "session_id"),
    *("num_turns", "cost_usd", "input_tokens", "output_tokens", "cpu_seconds"),
    *("memory_peak_bytes", "images", "options", "result"),
)
_OF_LISTED = ", ".join(f'"{column}"' for column in _LISTED)
_SQLITE_TRIGGERS = {  # name: (after what, the row whose user it was)
    "insert": ("INSERT", "NEW"),
    "update": (f"UPDATE OF {_OF_LISTED}", "NEW"),
    "delete": ("DELETE", "OLD"),
}
_POSTGRES_FUNCTION = f"""
CREATE FUNCTION job_versions_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        {_BUMP.format(row="OLD")}
    ELSE
        {_BUMP.format(row="NEW")}
    END IF;
    RETURN NULL;
END $$"""


def upgrade() -> None:
    op.create_table(
        "job_versions",
        sa.Column("user", sa.String(255), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_POSTGRES_FUNCTION)
        op.execute(
            f"CREATE TRIGGER jobs_changed AFTER INSERT OR UPDATE OF {_OF_LISTED} OR DELETE ON jobs"
            " FOR EACH ROW EXECUTE FUNCTION job_versions_bump()"
        )
    else:
        for name, (operation, row) in _SQLITE_TRIGGERS.items():
            op.execute(
                f"CREATE TRIGGER jobs_{name}_bump AFTER {operation} ON jobs"
                f" BEGIN {_BUMP.format(row=row)} END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER jobs_changed ON jobs")
        op.execute("DROP FUNCTION job_versions_bump()")
    else:
        for name in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER jobs_{name}_bump")
    op.drop_table("job_versions")
