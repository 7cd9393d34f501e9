"""A job's events as a person reads them: the agent's text, one line per tool call, tool
errors, and how each run ended with its turns, cost and tokens."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from rich.text import Text

from claude_batch_server.client.follow import Event

SHORT = 160  # characters of a tool call or error shown on its one line
# The input field that says most about a call, for the common tools.
SUMMARY_KEYS = ("command", "file_path", "notebook_path", "path", "pattern", "url", "query")


def one_line(text: str, limit: int = SHORT) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def money(usd: float) -> str:
    return f"${usd:.4f}"


def tokens(inputs: int, outputs: int) -> str:
    return f"{inputs:,} tokens in / {outputs:,} out"


def resources(used: Any) -> str | None:
    """`12.3 s CPU · 245.1 MiB peak memory`, from a job's `resources`."""
    if not isinstance(used, dict):
        return None
    cpu, peak = used.get("cpuSeconds"), used.get("memoryPeakBytes")
    if not isinstance(cpu, int | float) or not isinstance(peak, int):
        return None
    return f"{cpu:.1f} s CPU · {peak / 2**20:.1f} MiB peak memory"


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _blocks(event: dict[str, Any]) -> list[dict[str, Any]]:
    message = event.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _result_text(block: dict[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content or "")


class EventRenderer:
    """Turns events into lines; keeps what later lines need (tool names, the work dir)."""

    def __init__(self) -> None:
        self._tools: dict[str, str] = {}  # tool_use id → tool name, to label its error
        self._cwd = ""
        self._handlers: dict[str, Callable[[dict[str, Any]], list[Text]]] = {
            "system": self._system,
            "assistant": self._assistant,
            "user": self._user,
            "result": self._result,
            "server": self._server,
            "stderr": self._stderr,
            "raw": self._stderr,
        }

    def lines(self, event: Event) -> list[Text]:
        body = event.get("event")
        handler = self._handlers.get(str(event.get("type")))
        if handler is None or not isinstance(body, dict):
            return []
        return handler(body)

    def _system(self, body: dict[str, Any]) -> list[Text]:
        if body.get("subtype") != "init":
            return []
        self._cwd = str(body.get("cwd") or "")
        model = body.get("model") or "the default model"
        return [Text(f"· session {body.get('session_id', '?')} with {model}", style="dim")]

    def _assistant(self, body: dict[str, Any]) -> list[Text]:
        lines = []
        for block in _blocks(body):
            if block.get("type") == "text" and str(block.get("text", "")).strip():
                lines.append(Text(str(block["text"]).strip()))
            elif block.get("type") == "tool_use":
                name = str(block.get("name", "tool"))
                self._tools[str(block.get("id"))] = name
                lines.append(Text(f"→ {name}: {self._summary(block.get('input'))}", style="cyan"))
        return lines

    def _summary(self, tool_input: Any) -> str:
        if not isinstance(tool_input, dict):
            return one_line(json.dumps(tool_input))
        for key in SUMMARY_KEYS:
            value = tool_input.get(key)
            if isinstance(value, str) and value:
                if self._cwd and value.startswith(self._cwd + "/"):
                    value = value[len(self._cwd) + 1 :]  # workspace paths, relative
                return one_line(value)
        return one_line(json.dumps(tool_input, ensure_ascii=False))

    def _user(self, body: dict[str, Any]) -> list[Text]:
        return [
            Text(
                f"✗ {self._tools.get(str(block.get('tool_use_id')), 'tool')} failed: "
                + one_line(_result_text(block)),
                style="red",
            )
            for block in _blocks(body)
            if block.get("type") == "tool_result" and block.get("is_error")
        ]

    def _result(self, body: dict[str, Any]) -> list[Text]:
        usage = body.get("usage")
        if not isinstance(usage, dict):
            usage = {}
        inputs = sum(
            _int(usage.get(key))
            for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        cost = body.get("total_cost_usd")
        turns = _int(body.get("num_turns"))
        facts = (
            f"{turns} turn{'' if turns == 1 else 's'} · "
            f"{money(cost if isinstance(cost, int | float) else 0.0)} · "
            f"{tokens(inputs, _int(usage.get('output_tokens')))}"
        )
        if body.get("is_error") or body.get("subtype") not in (None, "success"):
            reason = one_line(str(body.get("result") or body.get("subtype") or "error"))
            return [Text(f"✗ result: {reason} · {facts}", style="bold red")]
        return [Text(f"✓ result: {facts}", style="bold green")]

    def _server(self, body: dict[str, Any]) -> list[Text]:
        kind = body.get("event")
        if kind == "run.started":
            resumed = " (resumed)" if body.get("resume") else ""
            return [Text(f"▶ run {body.get('run', '')} started{resumed}", style="bold")]
        if kind == "run.ended":
            status = str(body.get("status"))
            reason = str(body.get("error") or "")
            error = f": {one_line(reason)}" if reason and reason != status else ""
            style = "bold green" if status == "completed" else "bold red"
            return [Text(f"■ job {status}{error}", style=style)]
        return []

    def _stderr(self, body: dict[str, Any]) -> list[Text]:
        text = str(body.get("text", "")).rstrip()
        return [Text(text, style="dim")] if text else []
