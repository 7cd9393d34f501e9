"""A job's output holds JSON the server cannot write back (what its run printed, a tool
call's input): nested deeper than pydantic writes, or a lone surrogate (`"\\ud800"`, which
json.loads takes and UTF-8 has not): its transcript is still served whole, as valid JSON, and
its followers reach the end."""

from __future__ import annotations

import json
from typing import Any

from claude_batch_server.jobs.transcript import MAX_NESTING, RunResult, parse_stdout
from tests.fake_anthropic import FakeAnthropic, text
from tests.fake_anthropic.script import tool
from tests.jobs.conftest import JobWorldFactory
from tests.security.conftest import Attacks

DEPTH = 300  # past what pydantic serializes (255), within what json.loads reads (about 1000)


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_a_deeply_nested_event_is_served(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic, attacks: Attacks
) -> None:
    world = job_world()
    alice = world.member()
    deep = tool("Bash", {"command": "true", "description": "d", "x": nested(DEPTH)})
    lone = tool("Bash", {"command": "true", "description": "d", "\ud800": "\udfff"})
    script = fake_anthropic.add_script("deep", [deep, lone, text("Done.")])
    job_id = alice.run(alice.repo, f"Nest {script}")["jobId"]
    assert alice.wait_ended(job_id)["status"] == "completed"

    page = alice.http.get(f"/jobs/{job_id}/events", params={"follow": "false"})
    attacks.tried()
    assert page.status_code == 200
    events = json.loads(page.content)  # whole, not cut after its head was sent
    assert events and events[-1]["type"] == "server"  # up to how the run ended

    with alice.http.stream("GET", f"/jobs/{job_id}/events") as followed:
        body = b"".join(followed.iter_bytes())
    attacks.tried()
    assert b"event: end" in body
    assert body.count(b"\nid: ") + body.startswith(b"id: ") >= len(events)


def test_a_line_nested_past_the_bound_or_with_a_lone_surrogate_is_kept_raw(
    attacks: Attacks,
) -> None:
    for line in (b'{"type": "a", "x": "\\ud800"}', b'{"type": "a", "\\udfff": 1}'):
        attacks.tried()
        assert parse_stdout(line, RunResult()).type == "raw"
    assert parse_stdout(b'{"type": "a", "x": "\\ud83d\\ude00"}', RunResult()).type == "a"
    for depth, kept in ((MAX_NESTING, True), (MAX_NESTING + 1, False), (100_000, False)):
        line = b'{"type": "assistant", "x": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
        event = parse_stdout(line, RunResult())
        attacks.tried()
        assert (event.type == "assistant") is kept, depth
        assert (
            event.data == line.decode()
            if kept
            else json.loads(event.data) == {"text": line.decode()}
        )
