"""One job's transcript: shown so far, or followed live until the job ends."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from claude_batch_server.client.errors import COMPLETED, NOT_COMPLETED
from claude_batch_server.client.follow import Event, EventFollower
from claude_batch_server.client.http import Api
from claude_batch_server.client.output import Output
from claude_batch_server.client.render import EventRenderer
from claude_batch_server.client.status import live_status


def exit_code(jobs: list[dict[str, Any]]) -> int:
    return COMPLETED if all(job.get("status") == "completed" for job in jobs) else NOT_COMPLETED


def show_events(events: Iterable[Event], output: Output) -> None:
    renderer = EventRenderer()
    for event in events:
        _emit(event, renderer, output)


def follow(
    api: Api, job_id: str, output: Output, *, events: bool = True, after: int = 0
) -> dict[str, Any]:
    """Streams the job's events (as lines, or JSON lines with --json, or not at all) under
    a live status line, until the job has ended; returns the job as it ended."""
    renderer = EventRenderer()
    with live_status(api, job_id, output) as watch:
        for event in EventFollower(api, job_id, after=after, note=output.note):
            watch.saw(event)
            if events:
                _emit(event, renderer, output)
    job: dict[str, Any] = api.get(f"/jobs/{job_id}")
    return job


def _emit(event: Event, renderer: EventRenderer, output: Output) -> None:
    if output.json:
        output.json_line(event)
        return
    for line in renderer.lines(event):
        output.show(line)
