"""Structured logs (structlog), the request id middleware, and the audit trail.

Nothing secret is ever logged: requests are logged by method, path and status, never
by headers, query strings or bodies, and the audit trail records names, not credentials.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import Connection, insert, select
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from claude_batch_server.errors import ServiceError
from claude_batch_server.settings import LogFormat
from claude_batch_server.store.db import Database, after_commit
from claude_batch_server.store.tables import AUDIT_EVENTS, AuditEvent, utcnow

log = structlog.get_logger("claude_batch_server")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def configure(log_format: LogFormat) -> None:
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if log_format is LogFormat.JSON
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # uvicorn's own access log would print query strings; ours replaces it.
    logging.getLogger("uvicorn.access").disabled = True


def bind_user(user: str) -> None:
    structlog.contextvars.bind_contextvars(user=user)


class RequestLogMiddleware:
    """Gives every request an id (echoed as X-Request-ID) and logs it once it is answered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_id(scope) or uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                ms=round((time.perf_counter() - started) * 1000, 1),
            )


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _REQUEST_ID.match(text) else None
    return None


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
