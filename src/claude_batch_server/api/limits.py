"""Request size limits, enforced before any route reads the body; and no NUL in a path
or query, where no job id, name or filter may hold one (PostgreSQL could not even look
one up): 400 before any route sees it.

A JSON body may be up to `MAX_JSON_BODY` bytes, an image upload up to `MAX_UPLOAD_BODY`;
the declared Content-Length is checked first, and a body sent without one is counted as
it arrives. Too much answers 413 and nothing of it is kept.
"""

from __future__ import annotations

import json
from urllib.parse import unquote_to_bytes

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_JSON_BODY = 4 * 1024 * 1024
MAX_UPLOAD_BODY = 21 * 10 * 1024 * 1024  # 20 images of 10 MiB, and the multipart framing


class BodyTooLarge(HTTPException):
    """An HTTPException, so that FastAPI's body parsing lets it through as it is."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


NEW_JOB_FORM = "/ui/jobs/new"  # the dashboard's form: a prompt and its images at once


def limit_for(path: str) -> int:
    if path == NEW_JOB_FORM:
        return MAX_UPLOAD_BODY + MAX_JSON_BODY
    return MAX_UPLOAD_BODY if path.endswith("/images") else MAX_JSON_BODY


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\0" in scope["path"] or b"\0" in unquote_to_bytes(scope["query_string"]):
            await _answer(send, 400, "a NUL character in the path or query")
            return
        limit = limit_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _too_large(send, limit)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _too_large(send, limit)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _too_large(send: Send, limit: int) -> None:
    await _answer(send, 413, f"request body larger than {limit} bytes")


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
