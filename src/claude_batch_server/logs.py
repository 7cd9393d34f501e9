"""Structured logs (structlog) and the request id middleware.

Nothing secret is ever logged: requests are logged by method, path and status, never
by headers, query strings or bodies.
"""

from __future__ import annotations

import itertools
import logging
import re
import sys
import time
import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from claude_batch_server.settings import LogFormat

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


def bind_caller(caller: str) -> None:
    """Who the login throttle counted ("uid:N" for a local user), on the request's lines."""
    structlog.contextvars.bind_contextvars(caller=caller)


class RequestLogMiddleware:
    """Gives every request an id (echoed as X-Request-ID) and logs it once it is answered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_id(scope) or _new_id()
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


# this process's random prefix, then a count: unique, and no call for randomness per request
_ID_PREFIX = uuid.uuid4().hex[:16]
_ids = itertools.count(1)


def _new_id() -> str:
    return f"{_ID_PREFIX}{next(_ids):016x}"


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _REQUEST_ID.match(text) else None
    return None
