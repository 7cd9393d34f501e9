"""Times from the server (ISO 8601, UTC) and durations as people read them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


def elapsed(job: dict[str, Any], now: datetime | None = None) -> float | None:
    """Seconds the job has run (or ran); while it waits, seconds since it was created."""
    now = now or datetime.now(UTC)
    started = parse_time(job.get("startedAt"))
    completed = parse_time(job.get("completedAt"))
    if job.get("status") in ("created", "queued") or started is None:
        since = parse_time(job.get("createdAt"))
        return (now - since).total_seconds() if since else None
    return ((completed or now) - started).total_seconds()


def local_time(value: Any) -> str:
    parsed = parse_time(value)
    return parsed.astimezone().strftime("%Y-%m-%d %H:%M:%S") if parsed else "-"
