"""Jobs, repositories, files and diffs as tables and text for a person."""

from __future__ import annotations

from typing import Any

from rich.console import JustifyMethod
from rich.table import Table
from rich.text import Text

from claude_batch_server.client.render import money, one_line, resources, tokens
from claude_batch_server.client.timing import duration, elapsed, local_time

ENDED = frozenset({"completed", "failed", "timeout", "cancelled"})
STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "timeout": "red",
    "cancelled": "yellow",
    "running": "blue",
    "queued": "cyan",
    "cloning": "cyan",
    "ready": "green",
}


def status_text(status: Any) -> Text:
    return Text(str(status or "…"), style=STATUS_STYLE.get(str(status), ""))


def size(value: Any) -> str:
    if not isinstance(value, int):
        return "-"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{value} B"


def _usage(job: dict[str, Any]) -> tuple[int, int]:
    usage = job.get("usage") or {}
    return int(usage.get("inputTokens") or 0), int(usage.get("outputTokens") or 0)


# name, justify, min width: the id and the numbers are never cut short
JOB_COLUMNS: tuple[tuple[str, JustifyMethod, int | None], ...] = (
    ("JOB", "left", 32),
    ("STATUS", "left", 9),
    ("REPOSITORY", "left", None),
    ("ELAPSED", "right", 7),
    ("TURNS", "right", 5),
    ("COST", "right", 7),
    ("PROMPT", "left", None),
)


def jobs_table(jobs: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column, justify, min_width in JOB_COLUMNS:
        table.add_column(
            column, justify=justify, min_width=min_width, no_wrap=True, overflow="ellipsis"
        )
    for job in jobs:
        status = job.get("status")
        shown = status_text(status)
        if job.get("queuePosition") is not None:
            shown.append(f" #{job['queuePosition']}")
        seconds = elapsed(job) if status else None
        table.add_row(
            Text(str(job.get("jobId"))),
            shown,
            Text(str(job.get("repository", ""))),
            duration(seconds) if seconds is not None else "-",
            str(job.get("numTurns", "")),
            money(float(job["costUsd"])) if job.get("costUsd") is not None else "",
            Text(one_line(str(job.get("prompt", "")), 60)),
        )
    return table


def job_details(job: dict[str, Any]) -> Table:
    inputs, outputs = _usage(job)
    seconds = elapsed(job)
    rows = [
        ("job", job.get("jobId")),
        ("status", status_text(job.get("status"))),
        ("queue position", job.get("queuePosition")),
        ("user", job.get("user")),
        ("repository", job.get("repository")),
        ("created", local_time(job.get("createdAt"))),
        ("started", local_time(job.get("startedAt"))),
        ("completed", local_time(job.get("completedAt"))),
        ("elapsed", duration(seconds) if seconds is not None else None),
        ("turns", job.get("numTurns")),
        ("cost", money(float(job.get("costUsd") or 0))),
        ("tokens", tokens(inputs, outputs)),
        ("resources", resources(job.get("resources"))),
        ("exit code", job.get("exitCode")),
        ("session", job.get("sessionId")),
        ("images", ", ".join(job.get("images") or []) or None),
        ("options", ", ".join(f"{k}={v}" for k, v in (job.get("options") or {}).items()) or None),
        ("error", Text(str(job["error"]), style="red") if job.get("error") else None),
        ("prompt", job.get("prompt")),
        ("output", job.get("output")),
    ]
    return _facts(rows)


def repo_details(repo: dict[str, Any]) -> Table:
    rows = [
        ("name", repo.get("name")),
        ("status", status_text(repo.get("status"))),
        ("git url", repo.get("gitUrl")),
        ("branch", repo.get("branch")),
        ("commit", repo.get("commit")),
        ("description", repo.get("description") or None),
        ("registered by", repo.get("registeredBy")),
        ("registered", local_time(repo.get("registeredAt"))),
        ("last pull", local_time(repo.get("lastPull"))),
        ("size", size(repo.get("size"))),
        ("error", Text(str(repo["error"]), style="red") if repo.get("error") else None),
    ]
    return _facts(rows)


def _facts(rows: list[tuple[str, Any]]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for name, value in rows:
        if value is not None and value != "":
            table.add_row(name, value if isinstance(value, Text) else Text(str(value)))
    return table


def repos_table(repos: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    longest = max((len(str(repo.get("name"))) for repo in repos), default=4)
    table.add_column("NAME", no_wrap=True, min_width=longest)  # the name is never cut
    for column in ("STATUS", "BRANCH", "COMMIT", "OWNER", "LAST PULL", "GIT URL"):
        table.add_column(column, no_wrap=True, overflow="ellipsis")
    for repo in repos:
        table.add_row(
            Text(str(repo.get("name"))),
            status_text(repo.get("status")),
            Text(str(repo.get("branch") or "-")),
            str(repo.get("commit") or "-")[:10],
            Text(str(repo.get("registeredBy", ""))),
            local_time(repo.get("lastPull")),
            Text(str(repo.get("gitUrl", ""))),
        )
    return table


def files_table(entries: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("SIZE", justify="right", no_wrap=True)
    table.add_column("MODIFIED", no_wrap=True)
    table.add_column("NAME", no_wrap=True)
    for entry in entries:
        directory = entry.get("type") == "directory"
        table.add_row(
            "-" if directory else size(entry.get("size")),
            local_time(entry.get("modified")),
            Text(
                str(entry.get("name")) + ("/" if directory else ""), style="bold blue" * directory
            ),
        )
    return table


def summary_counts(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """How many jobs ended how, and what they cost together (the --json summary)."""
    counts = {status: 0 for status in ("completed", "failed", "timeout", "cancelled")}
    for job in jobs:
        counts[str(job.get("status"))] = counts.get(str(job.get("status")), 0) + 1
    return {
        **counts,
        "costUsd": sum(float(job.get("costUsd") or 0) for job in jobs),
        "inputTokens": sum(_usage(job)[0] for job in jobs),
        "outputTokens": sum(_usage(job)[1] for job in jobs),
    }


def summary(jobs: list[dict[str, Any]]) -> Text:
    counts = summary_counts(jobs)
    shown = [
        f"{counts[status]} {status}"
        for status in ("completed", "failed", "timeout", "cancelled")
        if counts[status] or status in ("completed", "failed")
    ]
    cost, inputs, outputs = counts["costUsd"], counts["inputTokens"], counts["outputTokens"]
    return Text(
        f"{', '.join(shown)} · {money(cost)} in total · {tokens(inputs, outputs)}",
        style="bold green" if counts["completed"] == len(jobs) else "bold red",
    )


DIFF_STYLES = (
    ("+++", "bold"),
    ("---", "bold"),
    ("diff ", "bold"),
    ("index ", "dim"),
    ("@@", "cyan"),
    ("+", "green"),
    ("-", "red"),
)


def coloured_diff(text: str) -> Text:
    result = Text()
    for line in text.splitlines(keepends=True):
        style = next((s for prefix, s in DIFF_STYLES if line.startswith(prefix)), "")
        result.append(line, style=style)
    return result
