"""Many prompts at once: the prompts file, and watching the jobs until all have ended."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.text import Text

from claude_batch_server.client.errors import USAGE, Failure, Unreachable
from claude_batch_server.client.http import Api
from claude_batch_server.client.output import Output
from claude_batch_server.client.submit import JobSpec
from claude_batch_server.client.views import ENDED, jobs_table, summary

POLL = 1.0  # seconds between looks at the jobs
GIVE_UP = 600.0  # seconds without reaching the server before watching fails

# What a JSON line may set besides its prompt: the API's option names, snake_case or not.
OPTION_NAMES = {
    "model": "model",
    "maxTurns": "maxTurns",
    "max_turns": "maxTurns",
    "timeout": "timeout",
    "allowedTools": "allowedTools",
    "allowed_tools": "allowedTools",
    "disallowedTools": "disallowedTools",
    "disallowed_tools": "disallowedTools",
    "appendSystemPrompt": "appendSystemPrompt",
    "append_system_prompt": "appendSystemPrompt",
}


def read_prompts(text: str, template: JobSpec, base: Path) -> list[JobSpec]:
    """One prompt per line, or a JSON object per line (`{"prompt": …, "model": …}`);
    blank lines are skipped. Image paths in JSON lines are relative to `base`."""
    specs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        label = f"line {number}"
        if line.lstrip().startswith("{"):
            specs.append(_json_line(line, replace(template, label=label), base))
        else:
            specs.append(replace(template, prompt=line.strip(), label=label))
    if not specs:
        raise Failure("the prompts file has no prompt", USAGE)
    return specs


def _json_line(line: str, template: JobSpec, base: Path) -> JobSpec:
    try:
        fields = json.loads(line)
    except ValueError as error:
        raise Failure(f"{template.label}: not valid JSON: {error}", USAGE) from None
    if not isinstance(fields, dict) or not isinstance(fields.get("prompt"), str):
        raise Failure(f'{template.label}: a JSON line needs a "prompt" string', USAGE)
    unknown = set(fields) - set(OPTION_NAMES) - {"prompt", "repository", "images"}
    if unknown:
        raise Failure(f"{template.label}: unknown field(s): {', '.join(sorted(unknown))}", USAGE)
    images = fields.get("images", [])
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise Failure(f'{template.label}: "images" must be a list of file paths', USAGE)
    chosen = {OPTION_NAMES[key]: value for key, value in fields.items() if key in OPTION_NAMES}
    return replace(
        template,
        prompt=fields["prompt"],
        repository=str(fields.get("repository", template.repository)),
        options={**template.options, **chosen},
        images=tuple(base / image for image in images) if images else template.images,
    )


class Board:
    """The batch's jobs, latest state of each, as a live table."""

    def __init__(self, job_ids: list[str]) -> None:
        self.jobs: dict[str, dict[str, Any]] = {job_id: {"jobId": job_id} for job_id in job_ids}

    @property
    def pending(self) -> list[str]:
        return [i for i, job in self.jobs.items() if job.get("status") not in ENDED]

    def __rich__(self) -> Group:
        done = len(self.jobs) - len(self.pending)
        caption = Text(f"{done} of {len(self.jobs)} ended", style="bold blue")
        return Group(jobs_table(list(self.jobs.values())), caption)


@contextmanager
def _display(board: Board, output: Output) -> Iterator[None]:
    with (
        Live(board, console=output.console, refresh_per_second=4) if output.live else nullcontext()
    ):
        yield


def watch(api: Api, job_ids: list[str], output: Output) -> list[dict[str, Any]]:
    """Polls the jobs until every one has ended; on a terminal a live table shows them,
    otherwise (without --json) one line per change of state."""
    board, lost_since = Board(job_ids), None
    with _display(board, output):
        while board.pending:
            try:
                for job_id in board.pending:
                    _update(board, api.get(f"/jobs/{job_id}"), output)
                lost_since = None
            except Unreachable as error:
                if lost_since is None:
                    lost_since = time.monotonic()
                    output.note(f"{error.message}; retrying…")
                elif time.monotonic() - lost_since > GIVE_UP:
                    raise
            if board.pending:
                time.sleep(POLL)
    if not output.live and not output.json:
        output.show(jobs_table(list(board.jobs.values())))
    jobs = list(board.jobs.values())
    if not output.json:
        output.show(summary(jobs))
    return jobs


def _update(board: Board, job: dict[str, Any], output: Output) -> None:
    before = board.jobs[job["jobId"]].get("status")
    board.jobs[job["jobId"]] = job
    if job["status"] != before and not output.live and not output.json:
        output.text(f"{job['jobId']}  {job['status']}")
