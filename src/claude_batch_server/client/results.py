"""What leaves the server once a job ends: its branch (and the pull request to open), as
the client tells it after following a job."""

from __future__ import annotations

import time
from typing import Any

from claude_batch_server.client.http import Api
from claude_batch_server.client.output import Output

SETTLE_DEADLINE = 120.0  # seconds to wait for a push after the job has ended
SETTLE_POLL = 0.5
OPTION = "--branch"


def branch_flag(args: list[str]) -> list[str]:
    """`--branch` takes an optional NAME, as click's optional values do: alone (last, or
    before another option) it means `claude-batch/<jobId>`, written `--branch=` here."""
    return [
        f"{OPTION}="
        if arg == OPTION and (i + 1 == len(args) or args[i + 1].startswith("-"))
        else arg
        for i, arg in enumerate(args)
    ]


def branch_option(name: str | None) -> dict[str, Any]:
    if name is None:
        return {}
    return {"branch": name or True}


def settled(api: Api, job: dict[str, Any]) -> dict[str, Any]:
    """The ended job once its push has run, if it asked for one (the server pushes after
    the job has ended); as it is after SETTLE_DEADLINE otherwise."""
    end = time.monotonic() + SETTLE_DEADLINE
    while _pending(job) and time.monotonic() < end:
        time.sleep(SETTLE_POLL)
        job = api.get(f"/jobs/{job['jobId']}")
    return job


def _pending(job: dict[str, Any]) -> bool:
    result = job.get("result") or {}
    return bool(result) and not (result.get("pushed") or result.get("error"))


def show(job: dict[str, Any], out: Output) -> None:
    """The branch line (and the pull-request link) of an ended job, if it has a branch."""
    result = job.get("result")
    if not result:
        return
    branch = result.get("branch")
    if result.get("pushed"):
        out.text(f"pushed branch {branch} ({str(result.get('commit'))[:12]})", style="green")
        if result.get("pullRequestUrl"):
            out.text(f"open a pull request: {result['pullRequestUrl']}")
    elif result.get("error"):
        out.text(f"branch {branch} not pushed: {result['error']}", style="red")
    else:
        out.text(f"branch {branch}: the push is still under way", style="dim")
