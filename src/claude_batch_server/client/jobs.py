"""`claude-batch jobs …`: your jobs, and what can be done to them."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from claude_batch_server.client import tail, views
from claude_batch_server.client.context import JsonOption, api, output
from claude_batch_server.client.follow import last_seq

jobs_app = typer.Typer(help="List, inspect, cancel, remove and resume jobs.", no_args_is_help=True)

JobId = Annotated[str, typer.Argument(help="The job's id.")]
PAGE = 500  # the most the server gives in one page


@jobs_app.command("list")
def list_(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="Only jobs in this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 20,
    json_mode: JsonOption = False,
) -> None:
    """Your jobs, newest first."""
    out = output(ctx, json_mode)
    client = api(ctx)
    jobs: list[dict[str, Any]] = []
    cursor = None
    while len(jobs) < limit:
        params: dict[str, Any] = {"limit": min(PAGE, limit - len(jobs))}
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        page = client.get("/jobs", **params)
        jobs += page["jobs"]
        cursor = page.get("nextCursor")
        if not cursor:
            break
    out.data(jobs) if out.json else out.show(views.jobs_table(jobs))


@jobs_app.command()
def show(ctx: typer.Context, job_id: JobId, json_mode: JsonOption = False) -> None:
    """One job in full: state, times, turns, cost, tokens, output."""
    out = output(ctx, json_mode)
    job = api(ctx).get(f"/jobs/{job_id}")
    out.data(job) if out.json else out.show(views.job_details(job))


@jobs_app.command()
def cancel(ctx: typer.Context, job_id: JobId, json_mode: JsonOption = False) -> None:
    """Cancel a queued or running job."""
    out = output(ctx, json_mode)
    job = api(ctx).post(f"/jobs/{job_id}/cancel")
    if out.json:
        out.data(job)
    elif job["status"] == "cancelled":
        out.text(f"{job_id} cancelled.")
    else:
        out.text(f"{job_id} is {job['status']}: it stops shortly.")


@jobs_app.command("rm")
def remove(ctx: typer.Context, job_id: JobId, json_mode: JsonOption = False) -> None:
    """Remove a job: stops it if it runs, deletes its workspace and record."""
    out = output(ctx, json_mode)
    api(ctx).delete(f"/jobs/{job_id}")
    out.data({"deleted": job_id}) if out.json else out.text(f"Removed {job_id}.")


@jobs_app.command()
def resume(
    ctx: typer.Context,
    job_id: JobId,
    prompt: Annotated[str, typer.Argument(help="The follow-up prompt.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream the job until it ends.")
    ] = False,
    json_mode: JsonOption = False,
) -> None:
    """Send a follow-up prompt to an ended job, in the same workspace and session."""
    out = output(ctx, json_mode)
    client = api(ctx)
    # where the transcript ends so far, read first: --follow shows only what this prompt adds
    seen = last_seq(client, job_id) if follow else 0
    job = client.post(f"/jobs/{job_id}/resume", {"prompt": prompt})
    if not follow:
        out.data(job) if out.json else out.show(job_id)
        return
    ended = tail.follow(client, job_id, out, events=not out.json, after=seen)
    if out.json:
        out.data(ended)
    raise typer.Exit(tail.exit_code([ended]))
