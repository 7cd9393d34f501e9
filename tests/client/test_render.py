"""The pure parts of the client: reading SSE, and events as lines (no server needed)."""

from __future__ import annotations

from claude_batch_server.client.follow import Message, sse_messages
from claude_batch_server.client.render import EventRenderer


def test_sse_messages_follow_the_spec() -> None:
    lines = [": ping", "id: 7", 'data: {"a":', "data: 1}", "", "event: end", "data: {}", ""]
    assert list(sse_messages(lines)) == [
        Message("message", '{"a":\n1}', "7"),
        Message("end", "{}", "7"),
    ]


def test_events_become_lines() -> None:
    renderer = EventRenderer()

    def shown(kind: str, body: dict[str, object]) -> list[str]:
        return [line.plain for line in renderer.lines({"seq": 1, "type": kind, "event": body})]

    init = {"type": "system", "subtype": "init", "cwd": "/w/j1", "session_id": "s1", "model": "m"}
    assert shown("system", init) == ["· session s1 with m"]
    call = {"type": "tool_use", "id": "t1", "name": "Edit", "input": {"file_path": "/w/j1/a.py"}}
    say = {"type": "text", "text": "Editing.\n"}
    assert shown("assistant", {"message": {"id": "m1", "content": [say, call]}}) == [
        "Editing.",
        "→ Edit: a.py",
    ]
    failed = {"type": "tool_result", "tool_use_id": "t1", "is_error": True, "content": "no\nway"}
    assert shown("user", {"message": {"content": [failed]}}) == ["✗ Edit failed: no way"]
    result = {
        "type": "result",
        "subtype": "error_max_turns",
        "is_error": True,
        "num_turns": 1,
        "total_cost_usd": 0.5,
        "usage": {"input_tokens": 1000, "cache_read_input_tokens": 500, "output_tokens": 7},
    }
    assert shown("result", result) == [
        "✗ result: error_max_turns · 1 turn · $0.5000 · 1,500 tokens in / 7 out"
    ]
    assert shown("server", {"event": "run.ended", "status": "failed", "error": "boom"}) == [
        "■ job failed: boom"
    ]
    assert shown("stderr", {"text": "warning\n"}) == ["warning"]
    assert shown("unknown", {}) == []
