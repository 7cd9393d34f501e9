"""A job's transcript is bounded: JOB_OUTPUT_MAX_MB stops a chatty job, an overlong line
is cut, and the events are read in pages."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from claude_batch_server.jobs.lines import Line, read_lines
from claude_batch_server.jobs.transcript import RunResult, parse_stdout
from tests.fake_anthropic import FakeAnthropic, Reply, Text, ToolUse, marker, text
from tests.jobs.conftest import JobWorldFactory
from tests.support.api import Api

CHUNK = 400_000  # characters of one answer of the chatty model


def chatty_turn(n: int) -> Reply:
    """A long answer, then a tool call, so that the conversation goes on."""
    return Reply((Text(f"{n}" * CHUNK), ToolUse("Bash", {"command": "true"})))


def test_a_job_past_the_output_limit_is_stopped_and_failed(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.add_script("chatty", [*map(chatty_turn, range(10)), text("Done.")])
    world = job_world(JOB_OUTPUT_MAX_MB="1")
    alice = world.member()

    job = alice.run(alice.repo, f"Talk {marker('chatty')}")
    done = alice.wait_ended(job["jobId"])

    assert done["status"] == "failed"
    assert "JOB_OUTPUT_MAX_MB (1 MB)" in done["error"]
    # not all ten answers were kept: the run was stopped at the limit
    kept = sum(len(json.dumps(event["event"])) for event in all_events(alice, job["jobId"]))
    assert kept < 2 * 1024 * 1024
    assert (world.server.data_dir / "server.db").stat().st_size < 4 * 1024 * 1024


def all_events(api: Api, job_id: str) -> list[dict[str, Any]]:
    """The whole transcript, page by page, as a client reads it."""
    events: list[dict[str, Any]] = []
    after = 0
    params: dict[str, Any] = {"follow": "false"}
    while page := api.http.get(f"/jobs/{job_id}/events", params=params | {"after": after}).json():
        events += page
        after = page[-1]["seq"]
    return events


def test_events_come_in_pages(job_world: JobWorldFactory) -> None:
    alice = job_world().member()
    job = alice.run(alice.repo, "Hello")
    assert alice.wait_ended(job["jobId"])["status"] == "completed"
    path = f"/jobs/{job['jobId']}/events"
    whole = all_events(alice, job["jobId"])
    assert [e["seq"] for e in whole] == list(range(1, len(whole) + 1)) and len(whole) > 3

    first = alice.http.get(path, params={"follow": "false", "limit": 2}).json()
    second = alice.http.get(path, params={"follow": "false", "limit": 2, "after": 2}).json()
    assert [e["seq"] for e in first + second] == [1, 2, 3, 4]
    last = alice.http.get(path, params={"follow": "false", "after": len(whole)}).json()
    assert last == []
    for bad in ({"limit": 0}, {"limit": 100_000}, {"after": -1}, {"after": 2**70}):
        response = alice.http.get(path, params={"follow": "false", **bad})
        assert 400 <= response.status_code < 500 and "detail" in response.json()


def test_an_overlong_line_is_cut_and_the_next_one_kept() -> None:
    async def read(data: bytes, limit: int) -> list[Line]:
        stream = asyncio.StreamReader(limit=1024)
        for start in range(0, len(data), 4096):
            stream.feed_data(data[start : start + 4096])
        stream.feed_eof()
        return [line async for line in read_lines(stream, limit)]

    long_line = b'{"type": "assistant", "text": "' + b"x" * 100_000 + b'"}\n'
    lines = asyncio.run(read(b"short\n" + long_line + b"after\nlast", 10_000))

    assert [line.data for line in lines[::2]] == [b"short\n", b"after\n"]
    assert lines[1].data == long_line[:10_000]
    assert lines[1].dropped == len(long_line) - 10_000
    assert lines[3] == Line(b"last")
    event = parse_stdout(lines[1].data, RunResult(), dropped=lines[1].dropped)
    assert event.type == "raw"
    assert json.loads(event.data)["cutBytes"] == lines[1].dropped
