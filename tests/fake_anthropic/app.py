"""The fake Anthropic API as an ASGI app (Starlette), and the state it shares with tests."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .records import (
    RecordedRequest,
    RequestContext,
    count_assistant_turns,
    cwd_of,
    find_marker,
    is_side_request,
    session_of,
)
from .script import (
    BUILTIN_SCRIPTS,
    DEFAULT_TEXT,
    Answer,
    ApiError,
    Block,
    Hang,
    Reply,
    Script,
    Text,
    Thinking,
    Turn,
    turn_from_json,
)

SIDE_TEXT = "OK"  # what side requests (titles, quota checks, ...) are answered
PING_INTERVAL = 1.0
MODELS = [
    "claude-opus-4-8",
    "claude-sonnet-5",
    "claude-haiku-4-5-20251001",
    "claude-sonnet-4-5-20250929",
]


@dataclass(frozen=True)
class _Position:
    """One conversation position of a script: transient errors, then the answer."""

    errors: tuple[ApiError, ...]
    turn: Turn | None


def _positions(turns: Sequence[Turn]) -> list[_Position]:
    positions: list[_Position] = []
    pending: list[ApiError] = []
    for turn in turns:
        if isinstance(turn, ApiError) and turn.times is not None:
            pending.append(turn)
            continue
        positions.append(_Position(tuple(pending), turn))
        pending = []
    if pending:
        positions.append(_Position(tuple(pending), None))
    return positions


class FakeState:
    """Scripts and recorded requests; safe to use from the test thread and the server loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._scripts: dict[str, Script] = {
            name: Script(name, tuple(turns)) for name, turns in BUILTIN_SCRIPTS.items()
        }
        self._records: list[RecordedRequest] = []
        self._attempts: dict[tuple[str, str, int], int] = {}
        self._seq = itertools.count(1)
        self.default_script = "hello"
        self.side_text = SIDE_TEXT
        self.closing = threading.Event()  # set on stop: slow streams finish at once

    # ------------------------------------------------------------------ scripts
    def add_script(self, name: str, turns: Iterable[Turn], *, repeat_last: bool = False) -> None:
        script = Script(name, tuple(turns), repeat_last)
        if not script.turns:
            raise ValueError("a script needs at least one turn")
        with self._lock:
            self._scripts[name] = script

    def script(self, name: str) -> Script | None:
        with self._lock:
            return self._scripts.get(name)

    # ------------------------------------------------------------------ records
    def record(self, **fields: Any) -> RecordedRequest:
        with self._lock:
            rec = RecordedRequest(seq=next(self._seq), time=time.time(), **fields)
            self._records.append(rec)
            self._changed.notify_all()
            return rec

    def touch(self) -> None:
        with self._lock:
            self._changed.notify_all()

    def records(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._attempts.clear()

    def wait_for(
        self, predicate: Callable[[RecordedRequest], bool], timeout: float
    ) -> RecordedRequest:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for rec in self._records:
                    if predicate(rec):
                        return rec
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no matching request reached the fake Anthropic API")
                self._changed.wait(remaining)

    # ------------------------------------------------------------------ choosing
    def choose(self, rec: RecordedRequest, ctx: RequestContext) -> Answer | None:
        """The answer for this request, or None when the script has no turn left."""
        with self._lock:
            script = self._scripts.get(ctx.script)
        if script is None:
            return ApiError(
                status=400,
                message=f"fake: unknown script {ctx.script!r}",
            )
        positions = _positions(script.turns)
        index = ctx.position
        if index >= len(positions):
            if not script.repeat_last:
                return None
            index = len(positions) - 1
        position = positions[index]
        key = (ctx.session_id or _hash(ctx.messages[:1]), ctx.script, ctx.position)
        with self._lock:
            attempt = self._attempts.get(key, 0)
            self._attempts[key] = attempt + 1
        rec.extra["attempt"] = attempt
        for err in position.errors:
            assert err.times is not None
            if attempt < err.times:
                return err
            attempt -= err.times
        turn = position.turn
        if turn is None:
            return None
        if callable(turn):
            return turn(ctx)
        return turn


async def _nap(state: FakeState, seconds: float | None) -> None:
    """Sleep ``seconds`` (None: until the fake stops)."""
    deadline = None if seconds is None else time.monotonic() + seconds
    while not state.closing.is_set() and (deadline is None or time.monotonic() < deadline):
        await asyncio.sleep(0.1)


def _hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------- rendering


def _fill(value: Any, ctx: RequestContext) -> Any:
    if isinstance(value, str):
        if ctx.cwd is not None:
            value = value.replace("{cwd}", ctx.cwd)
        return value.replace("{arg}", ctx.arg or "")
    if isinstance(value, Mapping):
        return {k: _fill(v, ctx) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_fill(v, ctx) for v in value]
    return value


def _tool_id(ctx: RequestContext, index: int) -> str:
    seed = f"{ctx.session_id}/{ctx.script}/{ctx.position}/{index}/{len(ctx.messages)}"
    return "toolu_fake_" + hashlib.sha256(seed.encode()).hexdigest()[:20]


def _block_json(block: Block, ctx: RequestContext, index: int) -> dict[str, Any]:
    if isinstance(block, Text):
        return {"type": "text", "text": _fill(block.text, ctx)}
    if isinstance(block, Thinking):
        return {
            "type": "thinking",
            "thinking": _fill(block.text, ctx),
            "signature": block.signature,
        }
    return {
        "type": "tool_use",
        "id": block.id or _tool_id(ctx, index),
        "name": block.name,
        "input": _fill(block.input, ctx),
    }


def _pieces(text: str, count: int) -> list[str]:
    count = max(1, count)
    size = max(1, -(-len(text) // count))
    parts = [text[i : i + size] for i in range(0, len(text), size)] or [""]
    return parts + [""] * (count - len(parts))


def _sse(event: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _message(
    msg_id: str, model: str, content: list[dict[str, Any]], stop: str | None, usage: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }


async def _stream_reply(
    reply: Reply, ctx: RequestContext, msg_id: str, rec: RecordedRequest, state: FakeState
) -> AsyncIterator[bytes]:
    usage = reply.usage.to_json()
    start_usage = {**usage, "output_tokens": 1}
    try:
        yield _sse(
            "message_start",
            {
                "type": "message_start",
                "message": _message(msg_id, ctx.model, [], None, start_usage),
            },
        )
        yield _sse("ping", {"type": "ping"})
        for index, block in enumerate(reply.blocks):
            data = _block_json(block, ctx, index)
            async for chunk in _stream_block(index, data, reply, state):
                yield chunk
        yield _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": reply.effective_stop_reason, "stop_sequence": None},
                "usage": usage,
            },
        )
        yield _sse("message_stop", {"type": "message_stop"})
        rec.completed = True
    except (asyncio.CancelledError, GeneratorExit):
        rec.disconnected = True
        raise
    finally:
        state.touch()


async def _stream_block(
    index: int, data: dict[str, Any], reply: Reply, state: FakeState
) -> AsyncIterator[bytes]:
    kind = data["type"]
    if kind == "text":
        start: dict[str, Any] = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in _pieces(data["text"], reply.chunks)]
    elif kind == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [
            {"type": "thinking_delta", "thinking": p}
            for p in _pieces(data["thinking"], reply.chunks)
        ]
        deltas.append({"type": "signature_delta", "signature": data["signature"]})
    else:
        start = {"type": "tool_use", "id": data["id"], "name": data["name"], "input": {}}
        deltas = [
            {"type": "input_json_delta", "partial_json": p}
            for p in _pieces(json.dumps(data["input"]), 2)
        ]
    yield _sse(
        "content_block_start",
        {
            "type": "content_block_start",
            "index": index,
            "content_block": start,
        },
    )
    for delta in deltas:
        if reply.chunk_delay and not state.closing.is_set():
            await asyncio.sleep(reply.chunk_delay)
        if delta.get("text") == "" or delta.get("thinking") == "":
            continue
        yield _sse(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        )
    yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})


async def _stream_hang(
    hang: Hang, ctx: RequestContext, msg_id: str, rec: RecordedRequest, state: FakeState
) -> AsyncIterator[bytes]:
    try:
        usage = {"input_tokens": 100, "output_tokens": 1}
        yield _sse(
            "message_start",
            {
                "type": "message_start",
                "message": _message(msg_id, ctx.model, [], None, usage),
            },
        )
        started = last_ping = time.monotonic()
        while hang.seconds is None or time.monotonic() - started < hang.seconds:
            if state.closing.is_set():
                break
            await asyncio.sleep(0.1)
            if time.monotonic() - last_ping >= PING_INTERVAL:
                last_ping = time.monotonic()
                yield _sse("ping", {"type": "ping"})
        async for chunk in _stream_block(
            0, {"type": "text", "text": "Done waiting."}, Reply((Text(""),)), state
        ):
            yield chunk
        yield _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 5},
            },
        )
        yield _sse("message_stop", {"type": "message_stop"})
        rec.completed = True
    except (asyncio.CancelledError, GeneratorExit):
        rec.disconnected = True
        raise
    finally:
        state.touch()


async def _stream_error_mid(
    err: ApiError, ctx: RequestContext, msg_id: str, rec: RecordedRequest, state: FakeState
) -> AsyncIterator[bytes]:
    yield _sse(
        "message_start",
        {
            "type": "message_start",
            "message": _message(
                msg_id, ctx.model, [], None, {"input_tokens": 100, "output_tokens": 1}
            ),
        },
    )
    yield _sse("error", err.body())
    rec.completed = True
    state.touch()


# ---------------------------------------------------------------------- the app


def create_app(state: FakeState) -> Starlette:  # noqa: C901 - one closure per route
    msg_ids = itertools.count(1)

    async def read_body(request: Request) -> Any:
        raw = await request.body()
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode(errors="replace")

    def base_fields(request: Request, body: Any, kind: str) -> dict[str, Any]:
        return {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": dict(request.headers),
            "body": body,
            "kind": kind,
        }

    async def messages(request: Request) -> Response:
        body = await read_body(request)
        rec = state.record(**base_fields(request, body, "messages"))
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            rec.status, rec.answer = 400, "error 400"
            return _error_response(ApiError(400, message="fake: body is not a Messages request"))
        msgs = body["messages"]
        rec.session_id = session_of(request.headers, body)
        index, name, arg = find_marker(msgs)
        if is_side_request(body):
            rec.side, rec.answer = True, "side"
            ctx = RequestContext(body, name or "", arg, 0, rec.session_id, None)
            return _reply_response(
                Reply((Text(state.side_text),)), ctx, body, rec, state, f"msg_fake_{next(msg_ids)}"
            )
        ctx = RequestContext(
            body=body,
            script=name or state.default_script,
            arg=arg,
            position=count_assistant_turns(msgs, index),
            session_id=rec.session_id,
            cwd=cwd_of(body),
        )
        rec.script, rec.arg, rec.position = ctx.script, ctx.arg, ctx.position
        answer = state.choose(rec, ctx)
        if answer is None:
            rec.answer = "exhausted"
            answer = Reply((Text(f"[fake] script {ctx.script!r} has no turn {ctx.position}."),))
        msg_id = f"msg_fake_{next(msg_ids)}"
        if isinstance(answer, ApiError):
            rec.answer = f"error {answer.status}"
            if answer.mid_stream and body.get("stream"):
                rec.status = 200
                return _sse_response(_stream_error_mid(answer, ctx, msg_id, rec, state))
            rec.status, rec.completed = answer.status, True
            return _error_response(answer)
        if isinstance(answer, Hang):
            rec.answer, rec.status = "hang", 200
            if not body.get("stream"):
                await _nap(state, answer.seconds)
                return JSONResponse(
                    _message(
                        msg_id,
                        ctx.model,
                        [{"type": "text", "text": ""}],
                        "end_turn",
                        {"input_tokens": 1, "output_tokens": 1},
                    )
                )
            return _sse_response(_stream_hang(answer, ctx, msg_id, rec, state))
        rec.answer = rec.answer or "reply"
        if not body.get("stream") and answer.chunk_delay:
            await asyncio.sleep(answer.chunk_delay * answer.chunks * len(answer.blocks))
        return _reply_response(answer, ctx, body, rec, state, msg_id)

    async def count_tokens(request: Request) -> Response:
        body = await read_body(request)
        rec = state.record(**base_fields(request, body, "count_tokens"))
        rec.status, rec.completed = 200, True
        return JSONResponse({"input_tokens": max(1, len(json.dumps(body)) // 4)})

    async def models(request: Request) -> Response:
        rec = state.record(**base_fields(request, None, "models"))
        rec.status, rec.completed = 200, True
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
            for m in MODELS
        ]
        return JSONResponse(
            {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
        )

    async def probe(request: Request) -> Response:
        rec = state.record(**base_fields(request, None, "probe"))
        rec.status, rec.completed = 200, True
        return JSONResponse({"fake": "anthropic"})

    async def other(request: Request) -> Response:
        body = await read_body(request)
        rec = state.record(**base_fields(request, body, "other"))
        rec.status, rec.completed = 404, True
        return _error_response(ApiError(404, message=f"fake: no route {request.url.path}"))

    # control API, for a fake running in another process
    async def control_requests(request: Request) -> Response:
        if request.method == "DELETE":
            state.clear()
            return JSONResponse({"cleared": True})
        return JSONResponse([r.to_json() for r in state.records()])

    async def control_script(request: Request) -> Response:
        body = await read_body(request)
        try:
            turns = [turn_from_json(t) for t in body["turns"]]
            state.add_script(
                request.path_params["name"], turns, repeat_last=bool(body.get("repeat_last", False))
            )
        except (KeyError, TypeError, ValueError) as exc:
            return JSONResponse({"detail": str(exc)}, status_code=400)
        return JSONResponse({"name": request.path_params["name"], "turns": len(turns)})

    routes = [
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/", probe, methods=["GET", "HEAD"]),
        Route("/_fake/requests", control_requests, methods=["GET", "DELETE"]),
        Route("/_fake/scripts/{name}", control_script, methods=["PUT", "POST"]),
        Route("/{path:path}", other, methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]),
    ]
    return Starlette(routes=routes)


def _error_response(err: ApiError) -> Response:
    headers = {"request-id": "req_fake_error", **err.headers}
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


def _sse_response(stream: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "request-id": "req_fake_stream"},
    )


def _reply_response(
    reply: Reply,
    ctx: RequestContext,
    body: dict[str, Any],
    rec: RecordedRequest,
    state: FakeState,
    msg_id: str,
) -> Response:
    rec.status = 200
    if body.get("stream"):
        return _sse_response(_stream_reply(reply, ctx, msg_id, rec, state))
    content = [_block_json(b, ctx, i) for i, b in enumerate(reply.blocks)]
    rec.completed = True
    state.touch()
    return JSONResponse(
        _message(msg_id, ctx.model, content, reply.effective_stop_reason, reply.usage.to_json()),
        headers={"request-id": "req_fake_json"},
    )


__all__ = ["DEFAULT_TEXT", "FakeState", "create_app"]
