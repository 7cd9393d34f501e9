"""`claude-batch logs -f`: following a job live, through a restart of the server."""

from __future__ import annotations

import json

from tests.client.support import CliWorld
from tests.fake_anthropic import FakeAnthropic, Hang, Reply, Text, ToolUse, bash, marker, text
from tests.support.server import wait_for

STEP = "echo step one"


def test_logs_follow_reconnects_after_the_server_restarts(
    cli_world: CliWorld, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.add_script("cli-step-then-hang", [bash(STEP, "First step"), Hang()])
    member, server = cli_world.member, cli_world.world.server
    job = member.run(member.repo, f"Step {marker('cli-step-then-hang')}")
    following = cli_world.cli.start("logs", job["jobId"], "-f")
    wait_for(lambda: f"→ Bash: {STEP}\n" in following.stdout, 60, "the tool call to be shown")
    # the agent is now waiting on a model answer that never comes

    server.restart()

    code = following.wait()
    lines = following.out().splitlines()
    assert code == 1, (following.out(), following.err())
    assert lines.count(f"→ Bash: {STEP}") == 1  # resumed after the last event, not replayed
    assert lines.count("▶ run 1 started") == 1
    assert lines[-1].startswith("■ job failed: the server stopped while this job was running")
    notes = following.err()
    assert "connection lost" in notes and "reconnected; resuming after event" in notes
    assert "Traceback" not in notes

    events = member.events(job["jobId"])
    streamed = cli_world.cli.ok("logs", job["jobId"], "--json").splitlines()
    assert [json.loads(line)["seq"] for line in streamed] == [e["seq"] for e in events]


def test_logs_reads_a_long_transcript_page_by_page(
    cli_world: CliWorld, fake_anthropic: FakeAnthropic
) -> None:
    """Ten answers of 500,000 characters: more than one page (4 MiB) of events."""
    turns = [
        Reply((Text(f"{n}" * 500_000), ToolUse("Bash", {"command": "true"}))) for n in range(10)
    ]
    fake_anthropic.add_script("cli-chatty", [*turns, text("Done.")])
    member = cli_world.member
    job_id = member.run(member.repo, f"Talk {marker('cli-chatty')}")["jobId"]
    assert member.wait_ended(job_id)["status"] == "completed"

    first_page = member.events(job_id)
    streamed = cli_world.cli.ok("logs", job_id, "--json").splitlines()

    seqs = [json.loads(line)["seq"] for line in streamed]
    assert len(first_page) < len(seqs) == seqs[-1]
    assert seqs == list(range(1, len(seqs) + 1))
    after_last = {"follow": "false", "after": seqs[-1]}
    assert member.http.get(f"/jobs/{job_id}/events", params=after_last).json() == []
