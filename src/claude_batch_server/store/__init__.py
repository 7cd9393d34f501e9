"""Persistence: the engine and sessions (`db`), the tables, and Alembic migrations
(`migrate`, `migrations/`).

The schema changes only here. The services query the tables with SQLAlchemy expressions,
never with SQL text built from strings.
"""
