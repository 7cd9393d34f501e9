"""The audit trail: who did what to what, from where, and how it ended; one row per action
in the database (read back by the admin route) and one line in the log. It records names,
never credentials."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, insert, select
from sqlalchemy.orm import Session

from claude_batch_server.errors import ServiceError
from claude_batch_server.logs import log
from claude_batch_server.store.db import Database, after_commit
from claude_batch_server.store.tables import AUDIT_EVENTS, AuditEvent, utcnow

_INSERT = insert(AUDIT_EVENTS)  # built once: building costs more than running


@dataclass(frozen=True)
class AuditRecord:
    time: datetime
    user: str
    address: str
    action: str
    target: str
    outcome: str


class Audit:
    """One audited action under way. The action may write its success row in its own
    transaction (`record_in`), which saves one; otherwise `Auditor.around` writes it."""

    def __init__(self, user: str, address: str, action: str, target: str) -> None:
        self.user, self.address, self.action, self.target = user, address, action, target
        self.recorded = False  # the success row has committed

    def row(self, outcome: str) -> dict[str, object]:
        return {
            "time": utcnow(),
            "user": self.user,
            "address": self.address,
            "action": self.action,
            "target": self.target,
            "outcome": outcome,
        }

    def record_in(self, unit: Session | Connection) -> None:
        """Writes the success row in `unit`, the action's last transaction: it is written
        if, and only if, the action's change is."""
        unit.execute(_INSERT, self.row("success"))
        after_commit(unit, self._committed)

    def _committed(self) -> None:
        self.recorded = True


class Auditor:
    """Writes every audited action to the database and to the log."""

    def __init__(self, database: Database, count: Callable[[str, str], None]) -> None:
        self._database = database
        self._count = count

    def record(self, *, user: str, address: str, action: str, target: str, outcome: str) -> None:
        self._write(Audit(user, address, action, target), outcome)

    def _write(self, audit: Audit, outcome: str) -> None:
        with self._database.connection() as connection:
            connection.execute(_INSERT, audit.row(outcome))
        self._announce(audit, outcome)

    def _announce(self, audit: Audit, outcome: str) -> None:
        self._count(audit.action, outcome)
        log.info(
            "audit",
            audit_user=audit.user,
            address=audit.address,
            action=audit.action,
            target=audit.target,
            outcome=outcome,
        )

    @contextmanager
    def around(self, *, user: str, address: str, action: str, target: str) -> Iterator[Audit]:
        """Records `action` once it ends: `success`, or the kind of error that ended it."""
        audit = Audit(user, address, action, target)
        try:
            yield audit
        except ServiceError as error:
            self._write(audit, type(error).__name__.lower())
            raise
        if audit.recorded:
            self._announce(audit, "success")
        else:
            self._write(audit, "success")

    def recent(self, *, user: str | None, since: datetime | None, limit: int) -> list[AuditRecord]:
        query = select(AuditEvent).order_by(AuditEvent.time.desc(), AuditEvent.id.desc())
        if user:
            query = query.where(AuditEvent.user == user)
        if since:
            query = query.where(AuditEvent.time >= since)
        with self._database.read() as session:
            rows: Iterator[AuditEvent] = iter(session.scalars(query.limit(limit)))
            return [
                AuditRecord(r.time, r.user, r.address, r.action, r.target, r.outcome) for r in rows
            ]
