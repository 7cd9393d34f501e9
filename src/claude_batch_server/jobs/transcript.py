"""Claude Code's stream-json output, line by line, turned into job events and a result."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from claude_batch_server.jobs.command import SESSION_ID

# Arrays and objects nested in an event kept as parsed, at most: the server writes events
# back as JSON (pydantic stops at 255 levels), and json.loads fails near the recursion limit.
MAX_NESTING = 64
_SURROGATE = re.compile("[\ud800-\udfff]")  # json.loads takes "\\ud800"; UTF-8 has none


@dataclass(frozen=True)
class Event:
    type: str  # the stream-json `type` (system, assistant, user, result…), or raw / stderr
    data: str  # the line as it came, or a JSON object describing what was not JSON
    time: datetime = field(default_factory=lambda: datetime.now(UTC))  # when it arrived


@dataclass
class RunResult:
    """What one run of Claude Code reported in its `result` event (and `system` init)."""

    session_id: str | None = None
    output: str | None = None
    is_error: bool = False
    subtype: str | None = None
    num_turns: int = 0
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    seen_result: bool = False
    errors: list[str] = field(default_factory=list)
    stderr_tail: list[str] = field(default_factory=list)  # the last lines, for the error
    recorded: bool = False  # the process and the run's start are in the database
    # the job's figures after this run, from its control group (None: not measured)
    cpu_seconds: float | None = None
    memory_peak_bytes: int | None = None

    @property
    def succeeded(self) -> bool:
        return self.seen_result and not self.is_error and self.subtype in (None, "success")

    def absorb(self, event: dict[str, Any]) -> None:
        session = event.get("session_id")
        # the next run's command line names it, which every local user reads: an id only
        if isinstance(session, str) and SESSION_ID.fullmatch(session):
            self.session_id = session
        if event.get("type") == "result":
            self._take_result(event)

    def _take_result(self, event: dict[str, Any]) -> None:
        self.seen_result = True
        self.is_error = bool(event.get("is_error"))
        self.subtype = _str(event.get("subtype"))
        result = event.get("result")
        self.output = result if isinstance(result, str) else self.output
        self.num_turns = _int(event.get("num_turns"))
        self.cost_usd = _float(event.get("total_cost_usd"))
        usage = event.get("usage")
        if not isinstance(usage, dict):
            usage = {}
        # every input token the model processed, cached or not
        self.input_tokens = sum(
            _int(usage.get(key))
            for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        self.output_tokens = _int(usage.get("output_tokens"))
        errors = event.get("errors")
        if isinstance(errors, list):
            self.errors = [str(e) for e in errors]


def parse_stdout(line: bytes, result: RunResult, dropped: int = 0) -> Event:
    """One stdout line as an event; what is not a JSON object, nests deeper than
    MAX_NESTING, holds a lone surrogate (what could not be written back), or was cut
    (`dropped` bytes off its end), is kept as a raw event."""
    text = _text(line)
    if dropped:
        return _text_event("raw", text, dropped)
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        return _text_event("raw", text)
    if (
        not isinstance(parsed, dict)
        or not isinstance(parsed.get("type"), str)
        or not _writable(parsed, MAX_NESTING)
    ):
        return _text_event("raw", text)
    result.absorb(parsed)
    return Event(parsed["type"][:32], text)


def _writable(value: object, limit: int) -> bool:
    """Whether `value` nests arrays and objects `limit` deep at most (a loop: any depth),
    and none of its strings or keys holds a surrogate."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str) and not item.isascii() and _SURROGATE.search(item):
            return False
        if isinstance(item, dict | list):
            if depth > limit:
                return False
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return True


def stderr_event(line: bytes, dropped: int = 0) -> Event:
    return _text_event("stderr", _text(line), dropped)


def _text(line: bytes) -> str:
    return line.decode("utf-8", errors="replace").rstrip("\r\n")


def _text_event(kind: str, text: str, dropped: int = 0) -> Event:
    """Not ASCII-escaped: what is stored stays close to the size of what came."""
    fields: dict[str, Any] = {"text": text} | ({"cutBytes": dropped} if dropped else {})
    return Event(kind, json.dumps(fields, ensure_ascii=False))


def server_event(kind: str, **fields: Any) -> Event:
    """Our own note in the transcript: a run starting, a resume, how a run ended."""
    return Event("server", json.dumps({"event": kind, **fields}))


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _float(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
