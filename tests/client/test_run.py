"""`claude-batch run`: one job followed to its end, and batches of many prompts."""

from __future__ import annotations

import json
from pathlib import Path

from tests.client.support import CliWorld
from tests.fake_anthropic import FakeAnthropic, marker
from tests.fake_anthropic.images import tiny_png


def test_run_follow_streams_the_job_to_its_end(cli_world: CliWorld) -> None:
    cli = cli_world.cli
    result = cli.run("run", cli_world.repo, f"Write hello.txt {marker('write-file')}", "--follow")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("job ") and " queued" in lines[0]
    job_id = lines[0].split()[1]
    assert "▶ run 1 started" in lines
    assert "→ Write: hello.txt" in lines
    assert "I wrote hello.txt." in lines
    result_line = next(line for line in lines if line.startswith("✓ result:"))
    assert "2 turns" in result_line and "$0." in result_line and "tokens in /" in result_line
    assert lines[-1] == "■ job completed"
    assert "\x1b[" not in result.stdout  # piped: plain text
    assert cli_world.member.job(job_id)["status"] == "completed"

    logs = cli.ok("logs", job_id)
    assert logs.splitlines() == lines[1:]


def test_run_prints_the_id_and_takes_images_and_options(
    cli_world: CliWorld, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    cli, member = cli_world.cli, cli_world.member
    picture = tmp_path / "pic.png"
    picture.write_bytes(tiny_png())
    out = cli.ok(
        "run",
        cli_world.repo,
        f"Look {marker('hello')}",
        "--image",
        str(picture),
        "--model",
        "claude-test-model-2",
        "--max-turns",
        "3",
        "--timeout",
        "600",
    )
    job_id = out.strip()
    done = member.wait_ended(job_id)
    assert done["status"] == "completed" and done["images"] == ["pic.png"]
    assert done["options"] == {"model": "claude-test-model-2", "maxTurns": 3, "timeout": 600}

    followed = json.loads(cli.ok("run", cli_world.repo, f"Hi {marker('hello')}", "-f", "--json"))
    assert followed["status"] == "completed" and followed["output"] == "Hello from the fake model."

    from_stdin = cli.ok("run", cli_world.repo, "-", stdin=f"Long\nprompt {marker('hello')}\n")
    assert member.job(from_stdin.strip())["prompt"] == f"Long\nprompt {marker('hello')}\n"


def test_a_batch_runs_every_prompt_and_sums_up(cli_world: CliWorld, tmp_path: Path) -> None:
    cli = cli_world.cli
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(
        f"Write a file {marker('write-file')}\n"
        "\n"
        f"Say hello {marker('hello')}\n"
        + json.dumps({"prompt": f"Who? {marker('whoami')}", "maxTurns": 4})
        + "\n"
    )

    result = cli.run("run", cli_world.repo, "--prompts-file", str(prompts))

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("3 completed, 0 failed · $0.")
    ids = [line.split()[0] for line in result.stdout.splitlines() if line.endswith("  completed")]
    assert len(set(ids)) == 3
    jobs = [cli_world.member.job(job_id) for job_id in ids]
    assert {job["status"] for job in jobs} == {"completed"}
    assert [job["options"] for job in jobs if "whoami" in job["prompt"]] == [{"maxTurns": 4}]


def test_a_batch_with_a_failure_is_exit_1_and_reports_it(
    cli_world: CliWorld, tmp_path: Path
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    lines = [
        {"prompt": f"Fine {marker('hello')}"},
        {"prompt": f"Broken {marker('bad-request')}", "model": "claude-test-model-3"},
    ]
    prompts.write_text("".join(json.dumps(line) + "\n" for line in lines))

    result = cli_world.cli.run("run", cli_world.repo, "--prompts-file", str(prompts), "--json")

    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["completed"], summary["failed"]) == (1, 1)
    assert summary["costUsd"] == sum(job["costUsd"] for job in summary["jobs"]) > 0
    failed = next(job for job in summary["jobs"] if job["status"] == "failed")
    assert failed["options"] == {"model": "claude-test-model-3"}


def test_a_bad_prompts_file_submits_nothing(cli_world: CliWorld, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('First prompt\n{"prompt": "x", "colour": "red"}\n')
    result = cli_world.cli.run("run", cli_world.repo, "--prompts-file", str(prompts))
    assert result.returncode == 2
    assert result.stderr == "claude-batch: line 2: unknown field(s): colour\n"

    prompts.write_text('First prompt\n{"prompt": "x", "maxTurns": 0}\n')
    refused = cli_world.cli.run("run", cli_world.repo, "--prompts-file", str(prompts))
    assert refused.returncode == 1
    assert refused.stderr.startswith("claude-batch: line 2: ")
    assert cli_world.member.http.get("/jobs").json()["jobs"] == []


def test_on_a_terminal_a_live_status_line_and_a_live_table(
    cli_world: CliWorld, tmp_path: Path
) -> None:
    cli = cli_world.cli
    code, shown = cli.on_terminal("run", cli_world.repo, f"Think {marker('long-think', '2')}", "-f")
    assert code == 0, shown
    assert "running · 0:0" in shown and "· 1 turn" in shown  # redrawn while it runs
    assert "Finished thinking." in shown

    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"One {marker('hello')}\nTwo {marker('long-think', '1')}\n")
    code, shown = cli.on_terminal("run", cli_world.repo, "--prompts-file", str(prompts))
    assert code == 0, shown
    assert "0 of 2 ended" in shown and "2 of 2 ended" in shown
    assert "2 completed, 0 failed" in shown
