"""Persistence: the engine and sessions (`db`), the tables, and Alembic migrations.

Nothing outside this package writes SQL.
"""
