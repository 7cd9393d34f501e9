"""What the fake model answers: turns, scripts and the built-in script library.

A *script* is a list of *turns*. Turn ``k`` is what the model answers to the ``k``-th
request of a conversation, counted as the number of assistant messages the request
already carries after the user message that named the script (see ``records.py``).

A turn is one of

* :class:`Reply` -- content blocks (:class:`Text`, :class:`Thinking`, :class:`ToolUse`)
  streamed like the real Messages API, optionally slowly (``chunk_delay``);
* :class:`ApiError` -- an HTTP error answer (or an SSE ``error`` event mid-stream);
  ``times=None`` fails every attempt, ``times=n`` fails the first ``n`` attempts at
  this position and then the *next* turn of the script is served at the same
  position (a transient error the CLI's retry gets past);
* :class:`Hang` -- send the response headers and ``message_start``, then nothing until
  the client goes away (for cancel / timeout tests);
* a callable ``(RequestContext) -> Reply | ApiError | Hang`` for answers computed from
  the request.

Strings in tool inputs and text may contain ``{cwd}`` (the CLI's working directory,
read from its system prompt) and ``{arg}`` (the ``ARG`` of a ``[script:NAME:ARG]``
marker); nothing else is substituted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .records import RequestContext


@dataclass(frozen=True)
class Usage:
    """Token counts reported for one model answer (deterministic, per turn)."""

    input_tokens: int = 100
    output_tokens: int = 20
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
        }


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Thinking:
    text: str
    signature: str = "fake-signature"


@dataclass(frozen=True)
class ToolUse:
    name: str
    input: Mapping[str, Any]
    id: str | None = None  # generated (deterministic per conversation position) if None


Block = Text | Thinking | ToolUse


@dataclass(frozen=True)
class Reply:
    blocks: tuple[Block, ...]
    stop_reason: str | None = None  # default: "tool_use" if a ToolUse block, else "end_turn"
    usage: Usage = field(default_factory=Usage)
    chunk_delay: float = 0.0  # seconds between streamed chunks
    chunks: int = 2  # a text/thinking block is streamed in this many deltas

    @property
    def effective_stop_reason(self) -> str:
        if self.stop_reason is not None:
            return self.stop_reason
        if any(isinstance(b, ToolUse) for b in self.blocks):
            return "tool_use"
        return "end_turn"


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass(frozen=True)
class ApiError:
    status: int = 500
    error_type: str | None = None  # default from status (529 -> overloaded_error, ...)
    message: str = "Internal server error (fake)"
    times: int | None = None  # None: every attempt at this position fails
    mid_stream: bool = False  # status 200, message_start, then an SSE `error` event
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def type(self) -> str:
        if self.error_type is not None:
            return self.error_type
        return _ERROR_TYPES.get(self.status, "api_error")

    def body(self) -> dict[str, Any]:
        return {"type": "error", "error": {"type": self.type, "message": self.message}}


@dataclass(frozen=True)
class Hang:
    """Send headers and ``message_start``, then pings only, for ``seconds`` (None: forever)."""

    seconds: float | None = None


Answer = Reply | ApiError | Hang
Turn = Answer | Callable[["RequestContext"], Answer]


@dataclass(frozen=True)
class Script:
    name: str
    turns: tuple[Turn, ...]
    repeat_last: bool = False  # past the end, keep answering with the last turn


# --------------------------------------------------------------------------- helpers


def text(answer: str, *, usage: Usage | None = None) -> Reply:
    """A plain text answer that ends the turn."""
    return Reply((Text(answer),), usage=usage or Usage())


def tool(name: str, tool_input: Mapping[str, Any], *, say: str | None = None) -> Reply:
    """One tool call, optionally preceded by a text block."""
    blocks: list[Block] = [Text(say)] if say else []
    blocks.append(ToolUse(name, dict(tool_input)))
    return Reply(tuple(blocks))


def write_file(path: str, content: str) -> Reply:
    """``Write`` a file; a relative ``path`` is taken relative to the CLI's cwd."""
    return tool("Write", {"file_path": _abs(path), "content": content})


def read_file(path: str) -> Reply:
    return tool("Read", {"file_path": _abs(path)})


def bash(command: str, description: str = "Run a command") -> Reply:
    return tool("Bash", {"command": command, "description": description})


def long_think(
    seconds: float, answer: str = "Finished thinking.", *, interval: float = 0.5
) -> Reply:
    """Stream a thinking block slowly for about ``seconds``, then a text answer."""
    chunks = max(1, round(seconds / interval))
    return Reply(
        (Thinking("Thinking hard. " * chunks), Text(answer)),
        chunk_delay=seconds / (2 * chunks),
        chunks=chunks,
    )


def error(
    status: int = 500,
    message: str | None = None,
    *,
    times: int | None = None,
    mid_stream: bool = False,
) -> ApiError:
    return ApiError(
        status=status,
        message=message or f"fake API error {status}",
        times=times,
        mid_stream=mid_stream,
    )


def overloaded(*, times: int | None = None) -> ApiError:
    return ApiError(status=529, message="Overloaded", times=times)


def _abs(path: str) -> str:
    return path if path.startswith(("/", "{cwd}")) else "{cwd}/" + path


def _echo(ctx: RequestContext) -> Reply:
    return text("You said: " + ctx.last_user_text)


def _long_think_arg(ctx: RequestContext) -> Reply:
    return long_think(float(ctx.arg or "30"))


DEFAULT_TEXT = "Hello from the fake model."

BUILTIN_SCRIPTS: dict[str, Sequence[Turn]] = {
    # plain answers
    "hello": [text(DEFAULT_TEXT)],
    "echo": [_echo],
    "two-answers": [text("First answer."), text("Second answer.")],
    # tools
    "write-file": [write_file("hello.txt", "hello world\n"), text("I wrote hello.txt.")],
    "whoami": [bash("id -un > who.txt", "Write the user name"), text("I wrote who.txt.")],
    "read": [read_file("{arg}"), text("I read the file.")],
    "multi-tool": [
        write_file("notes.md", "# Notes\n"),
        bash("ls -l > listing.txt"),
        read_file("notes.md"),
        text("All done."),
    ],
    "thinking": [Reply((Thinking("Let me think."), Text("Thought about it.")))],
    # failures
    "error-500": [error(500)],
    "overloaded": [overloaded()],
    "overloaded-once": [overloaded(times=1), text("Recovered after overload.")],
    "bad-request": [error(400, "fake invalid request")],
    "auth-error": [error(401, "invalid x-api-key")],
    "error-mid-stream": [ApiError(status=529, message="Overloaded", mid_stream=True)],
    # slow
    "long-think": [_long_think_arg],  # [script:long-think:SECONDS], default 30
    "hang": [Hang()],
}


# ------------------------------------------------------------------ JSON (control API)


def turn_from_json(data: Mapping[str, Any]) -> Answer:
    """Build a turn from the JSON form used by the HTTP control API (``POST /_fake/scripts``).

    ``{"text": "..."}``, ``{"tool": {"name": "Bash", "input": {...}}}``,
    ``{"blocks": [{"type": "text"|"thinking"|"tool_use", ...}], "stop_reason": ...}``,
    ``{"error": {"status": 529, "message": "...", "times": 1, "mid_stream": false}}``,
    ``{"long_think": {"seconds": 10, "answer": "..."}}``, ``{"hang": {"seconds": null}}``;
    any of them may carry ``"usage": {...}``.
    """
    usage = Usage(**data["usage"]) if "usage" in data else Usage()
    if "text" in data:
        return text(str(data["text"]), usage=usage)
    if "tool" in data:
        spec = data["tool"]
        return Reply((ToolUse(spec["name"], spec.get("input", {}), spec.get("id")),), usage=usage)
    if "blocks" in data:
        return Reply(
            tuple(_block_from_json(b) for b in data["blocks"]),
            stop_reason=data.get("stop_reason"),
            usage=usage,
            chunk_delay=float(data.get("chunk_delay", 0.0)),
        )
    if "error" in data:
        spec = data["error"]
        return ApiError(
            status=int(spec.get("status", 500)),
            error_type=spec.get("type"),
            message=spec.get("message", "fake API error"),
            times=spec.get("times"),
            mid_stream=bool(spec.get("mid_stream", False)),
            headers=spec.get("headers", {}),
        )
    if "long_think" in data:
        spec = data["long_think"]
        return long_think(float(spec["seconds"]), spec.get("answer", "Finished thinking."))
    if "hang" in data:
        return Hang(data["hang"].get("seconds") if data["hang"] else None)
    raise ValueError(f"unknown turn: {dict(data)!r}")


def _block_from_json(data: Mapping[str, Any]) -> Block:
    kind = data.get("type")
    if kind == "text":
        return Text(data["text"])
    if kind == "thinking":
        return Thinking(data["thinking"])
    if kind == "tool_use":
        return ToolUse(data["name"], data.get("input", {}), data.get("id"))
    raise ValueError(f"unknown block: {dict(data)!r}")
