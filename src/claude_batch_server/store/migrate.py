"""Apply the Alembic migrations at start. Several processes may start at once on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from claude_batch_server.store.db import Database

MIGRATIONS = Path(__file__).parent / "migrations"
# Any fixed number: it names the advisory lock that serialises concurrent upgrades.
MIGRATION_LOCK = 7_351_420


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(database: Database) -> None:
    config = alembic_config()
    with database.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
