"""Reading Messages API requests: which script and turn they ask for, and what was recorded."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

MARKER = re.compile(r"\[script:([A-Za-z0-9_.-]+)(?::([^\]\s]*))?\]")
_CWD = re.compile(r"^\s*-?\s*(?:Primary working directory|Working directory):\s*(\S.*?)\s*$", re.M)
_REMINDER = "<system-reminder>"


def system_text(body: Mapping[str, Any]) -> str:
    system = body.get("system")
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "\n".join(b.get("text", "") for b in system if isinstance(b, dict))
    return ""


def user_texts(message: Mapping[str, Any]) -> list[str]:
    """The text blocks of one message (tool results and images left out)."""
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [
            b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"
        ]
    return []


def iter_blocks(content: Any) -> Iterator[dict[str, Any]]:
    """Every content block, descending into tool_result contents."""
    if not isinstance(content, list):
        return
    for block in content:
        if not isinstance(block, dict):
            continue
        yield block
        if block.get("type") == "tool_result":
            yield from iter_blocks(block.get("content"))


@dataclass
class RequestContext:
    """What a script turn may look at when it is computed from the request."""

    body: dict[str, Any]
    script: str
    arg: str | None
    position: int
    session_id: str | None
    cwd: str | None

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages") or [])

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))

    @property
    def last_user_text(self) -> str:
        """The user's own words in the last user message (system reminders left out)."""
        for message in reversed(self.messages):
            if message.get("role") != "user":
                continue
            texts = [t for t in user_texts(message) if not t.lstrip().startswith(_REMINDER)]
            if texts:
                return "\n".join(t.strip() for t in texts)
        return ""

    @property
    def last_tool_result(self) -> dict[str, Any] | None:
        for message in reversed(self.messages):
            if message.get("role") != "user":
                continue
            for block in message.get("content") or []:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    return block
            return None
        return None


def find_marker(messages: list[dict[str, Any]]) -> tuple[int | None, str | None, str | None]:
    """Index of the last user message naming a script, the script name and its argument."""
    found: tuple[int | None, str | None, str | None] = (None, None, None)
    for index, message in enumerate(messages):
        if message.get("role") != "user":
            continue
        for text in user_texts(message):
            hits = MARKER.findall(text)
            if hits:
                name, arg = hits[-1]
                found = (index, name, arg or None)
    return found


def count_assistant_turns(messages: list[dict[str, Any]], after: int | None) -> int:
    """Runs of assistant messages after index ``after`` (one model answer may be split)."""
    count = 0
    previous = None
    for message in messages[(after + 1 if after is not None else 0) :]:
        role = message.get("role")
        if role == "system":
            continue
        if role == "assistant" and previous != "assistant":
            count += 1
        previous = role
    return count


def session_of(headers: Mapping[str, str], body: Mapping[str, Any]) -> str | None:
    session = headers.get("x-claude-code-session-id")
    if session:
        return session
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        try:
            user = json.loads(metadata["user_id"])
        except ValueError:
            return None
        if isinstance(user, dict) and isinstance(user.get("session_id"), str):
            return user["session_id"]
    return None


def cwd_of(body: Mapping[str, Any]) -> str | None:
    match = _CWD.search(system_text(body))
    return match.group(1) if match else None


def is_side_request(body: Mapping[str, Any]) -> bool:
    """A request that is not a turn of the agent's conversation (title, quota check, ...).

    The agent's own requests carry tools or the system prompt's environment section;
    side requests (small-model helpers) carry neither.
    """
    return not body.get("tools") and cwd_of(body) is None


@dataclass
class RecordedRequest:
    """One request the fake received, kept for assertions."""

    seq: int
    time: float
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or the raw text when it was not JSON
    kind: str  # "messages", "count_tokens", "models", "probe", "control" or "other"
    side: bool = False  # a side request of the CLI (not a conversation turn)
    script: str | None = None
    arg: str | None = None
    position: int | None = None  # which turn of the script was asked for
    session_id: str | None = None
    answer: str | None = None  # "reply", "error 529", "hang", "exhausted", "side"
    status: int | None = None
    completed: bool = False  # the whole answer was sent
    disconnected: bool = False  # the client went away while the answer streamed
    extra: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ body helpers
    @property
    def json(self) -> dict[str, Any]:
        return self.body if isinstance(self.body, dict) else {}

    @property
    def model(self) -> str | None:
        return self.json.get("model")

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.json.get("messages") or [])

    @property
    def system(self) -> str:
        return system_text(self.json)

    @property
    def tool_names(self) -> list[str]:
        return [t.get("name", "") for t in self.json.get("tools") or []]

    @property
    def stream(self) -> bool:
        return bool(self.json.get("stream"))

    def blocks(self, block_type: str | None = None) -> list[dict[str, Any]]:
        """Every content block of every message (also inside tool results), optionally by type."""
        found: list[dict[str, Any]] = []
        for message in self.messages:
            content = message.get("content")
            if isinstance(content, str):
                content = [{"type": "text", "text": content}]
            for block in iter_blocks(content):
                if block_type is None or block.get("type") == block_type:
                    found.append(block)
        return found

    def images(self) -> list[dict[str, Any]]:
        return self.blocks("image")

    def texts(self, role: str | None = "user") -> list[str]:
        """All text blocks of messages of ``role`` (None: every role), in order."""
        return [
            text
            for message in self.messages
            if role is None or message.get("role") == role
            for text in user_texts(message)
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body": self.body,
            "kind": self.kind,
            "side": self.side,
            "script": self.script,
            "arg": self.arg,
            "position": self.position,
            "session_id": self.session_id,
            "answer": self.answer,
            "status": self.status,
            "completed": self.completed,
            "disconnected": self.disconnected,
        }
