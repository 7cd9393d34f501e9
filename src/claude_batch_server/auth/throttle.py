"""Failed-login throttling per user name and per client address, kept in the database so
that a restart forgets nothing.

A name or address is slowed after a few failures (each further answer waits longer), then
refused outright for a period that doubles with every further failure. Failures older than
the window are forgotten; a successful login clears the name's count, not the address's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from claude_batch_server.store.db import Database
from claude_batch_server.store.tables import LoginThrottle, utcnow


@dataclass(frozen=True)
class Limits:
    per_user: int = 5
    per_address: int = 20
    slow_after: int = 2  # failures answered at the normal pace before slowing starts
    slow_step: float = 0.5  # seconds added per failure beyond slow_after
    slow_max: float = 2.0
    window: timedelta = timedelta(minutes=15)
    first_block: timedelta = timedelta(minutes=1)
    max_block: timedelta = timedelta(hours=1)


class Throttle:
    def __init__(self, database: Database, limits: Limits | None = None) -> None:
        self._database = database
        self.limits = limits or Limits()

    def retry_after(self, username: str, address: str) -> int | None:
        """Seconds until the name or address may try again, or None when they may now."""
        now = utcnow()
        with self._database.read() as session:
            rows = session.scalars(select(LoginThrottle).where(_keys(username, address)))
            waits = [
                (row.blocked_until - now).total_seconds()
                for row in rows
                if row.blocked_until is not None and row.blocked_until > now
            ]
        return int(max(waits)) + 1 if waits else None

    def record_failure(self, username: str, address: str) -> float:
        """Count one failure for both keys; returns the extra delay this answer should take."""
        try:
            user_failures = self._count_failure(username, address)
        except IntegrityError:  # another process inserted the same first failure: count again
            user_failures = self._count_failure(username, address)
        beyond = user_failures - self.limits.slow_after
        return min(max(beyond, 0) * self.limits.slow_step, self.limits.slow_max)

    def _count_failure(self, username: str, address: str) -> int:
        now = utcnow()
        with self._database.session() as session:
            self._bump(session, "address", address, self.limits.per_address, now)
            return self._bump(session, "user", username, self.limits.per_user, now)

    def record_success(self, username: str) -> None:
        with self._database.session() as session:
            row = session.get(LoginThrottle, ("user", username))
            if row is not None:
                session.delete(row)

    def _bump(self, session: Session, scope: str, key: str, limit: int, now: datetime) -> int:
        row = session.get(LoginThrottle, (scope, key), with_for_update=True)
        if row is None:
            row = LoginThrottle(scope=scope, key=key, failures=0, last_failure=now)
            session.add(row)
            session.flush()
        elif now - row.last_failure > self.limits.window:
            row.failures, row.blocked_until = 0, None
        row.failures += 1
        row.last_failure = now
        if row.failures >= limit:
            doublings = row.failures - limit
            block = min(self.limits.first_block * 2**doublings, self.limits.max_block)
            row.blocked_until = now + block
        return row.failures


def _keys(username: str, address: str) -> ColumnElement[bool]:
    return or_(
        and_(LoginThrottle.scope == "user", LoginThrottle.key == username),
        and_(LoginThrottle.scope == "address", LoginThrottle.key == address),
    )
