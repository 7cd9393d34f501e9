"""A job's events as rows of the transcript page: the agent's text, one row per tool call
(its result folded beneath it by the page's script), errors marked, each run's result with
its turns, cost and tokens. Rows hold text only; the templates escape all of it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from claude_batch_server.store.tables import JobEvent

SHORT = 200  # characters of a tool call's one line
LONG = 20_000  # characters of a text or a tool's result shown; the rest is in the files
# The input field that says most about a call, for the common tools.
SUMMARY_KEYS = ("command", "file_path", "notebook_path", "path", "pattern", "url", "query")


@dataclass(frozen=True)
class Row:
    seq: int
    kind: str  # text, tool, tool-result, result, run, note, stderr
    text: str
    detail: str = ""  # folded beneath the line
    failed: bool = False
    anchor: str = ""  # ties a tool's result to its call


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _one_line(text: str) -> str:
    return _cut(" ".join(text.split()), SHORT)


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def anchor(tool_use_id: object) -> str:
    """An element id of our own making for a tool call: nothing the agent chose."""
    return "tool-" + hashlib.sha256(str(tool_use_id).encode()).hexdigest()[:16]


def _blocks(body: dict[str, Any]) -> list[dict[str, Any]]:
    message = body.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _summary(tool_input: Any) -> str:
    if isinstance(tool_input, dict):
        for key in SUMMARY_KEYS:
            value = tool_input.get(key)
            if isinstance(value, str) and value:
                return _one_line(value)
    return _one_line(json.dumps(tool_input, ensure_ascii=False))


def _result_text(block: dict[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def _assistant(seq: int, body: dict[str, Any]) -> list[Row]:
    rows = []
    for block in _blocks(body):
        if block.get("type") == "text" and str(block.get("text", "")).strip():
            rows.append(Row(seq, "text", _cut(str(block["text"]).strip(), LONG)))
        elif block.get("type") == "tool_use":
            name = _one_line(str(block.get("name", "tool")))
            text = f"{name}: {_summary(block.get('input'))}"
            rows.append(Row(seq, "tool", text, anchor=anchor(block.get("id"))))
    return rows


def _user(seq: int, body: dict[str, Any]) -> list[Row]:
    return [
        Row(
            seq,
            "tool-result",
            "error" if block.get("is_error") else "result",
            _cut(_result_text(block), LONG),
            failed=bool(block.get("is_error")),
            anchor=anchor(block.get("tool_use_id")),
        )
        for block in _blocks(body)
        if block.get("type") == "tool_result"
    ]


def _result(seq: int, body: dict[str, Any]) -> list[Row]:
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    assert isinstance(usage, dict)
    inputs = sum(
        _int(usage.get(k))
        for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    cost = body.get("total_cost_usd")
    turns = _int(body.get("num_turns"))
    facts = (
        f"{turns} turn{'' if turns == 1 else 's'} · "
        f"${cost if isinstance(cost, int | float) else 0.0:.4f} · "
        f"{inputs:,} tokens in / {_int(usage.get('output_tokens')):,} out"
    )
    failed = bool(body.get("is_error")) or body.get("subtype") not in (None, "success")
    text = _cut(str(body.get("result") or body.get("subtype") or ""), LONG)
    return [Row(seq, "result", facts, text, failed=failed)]


def _server(seq: int, body: dict[str, Any]) -> list[Row]:
    kind = body.get("event")
    if kind == "run.started":
        resumed = " (a follow-up)" if body.get("resume") else ""
        return [Row(seq, "run", f"run {_int(body.get('run'))} started{resumed}")]
    if kind == "run.ended":
        status = _one_line(str(body.get("status")))
        reason = str(body.get("error") or "")
        detail = _one_line(reason) if reason and reason != status else ""
        return [Row(seq, "run", f"job {status}", detail, failed=status != "completed")]
    return []


def _system(seq: int, body: dict[str, Any]) -> list[Row]:
    if body.get("subtype") != "init":
        return []
    model = body.get("model") or "the default model"
    return [Row(seq, "note", _one_line(f"session {body.get('session_id', '?')} with {model}"))]


def _stderr(seq: int, body: dict[str, Any]) -> list[Row]:
    text = str(body.get("text", "")).rstrip()
    return [Row(seq, "stderr", _cut(text, LONG))] if text else []


_HANDLERS = {
    "system": _system,
    "assistant": _assistant,
    "user": _user,
    "result": _result,
    "server": _server,
    "stderr": _stderr,
    "raw": _stderr,
}


def rows(events: Iterable[JobEvent], cwd: str = "") -> list[Row]:
    """`cwd`: the job's workspace, left out of the paths its tools name."""
    out: list[Row] = []
    for event in events:
        handler = _HANDLERS.get(event.type)
        try:
            body = json.loads(event.data)
        except ValueError:
            continue
        if handler is not None and isinstance(body, dict):
            out += handler(event.seq, body)
    if cwd:  # workspace paths, relative
        out = [
            replace(r, text=r.text.replace(cwd + "/", "")) if r.kind == "tool" else r for r in out
        ]
    return out
