"""The live status line shown while waiting on one job: state, queue position, elapsed
time and turns so far. The job is polled in a thread; the line redraws itself."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.live import Live
from rich.text import Text

from claude_batch_server.client.errors import Failure
from claude_batch_server.client.follow import Event
from claude_batch_server.client.http import Api
from claude_batch_server.client.output import Output
from claude_batch_server.client.timing import duration, elapsed

POLL = 1.0  # seconds between looks at the job
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class JobWatch:
    """What is known of a job while following it; a rich renderable of one line."""

    def __init__(self) -> None:
        self.job: dict[str, Any] = {}
        self.reachable = True
        self._turns: set[str] = set()

    def saw(self, event: Event) -> None:
        """Counts turns as the events arrive: one per distinct assistant message."""
        body = event.get("event")
        message = body.get("message") if isinstance(body, dict) else None
        if event.get("type") == "assistant" and isinstance(message, dict):
            self._turns.add(str(message.get("id", len(self._turns))))

    @property
    def turns(self) -> int:
        return max(len(self._turns), int(self.job.get("numTurns") or 0))

    def __rich__(self) -> Text:
        frame = SPINNER[int(time.monotonic() * 10) % len(SPINNER)]
        status = str(self.job.get("status", "…"))
        parts = [f"{frame} {status}"]
        if self.job.get("queuePosition") is not None:
            parts.append(f"position {self.job['queuePosition']} in the queue")
        seconds = elapsed(self.job) if self.job else None
        if seconds is not None:
            parts.append(duration(seconds))
        parts.append(f"{self.turns} turn{'' if self.turns == 1 else 's'}")
        if not self.reachable:
            parts.append("server unreachable, retrying")
        return Text(" · ".join(parts), style="bold blue")


class _Poller(threading.Thread):
    def __init__(self, api: Api, job_id: str, watch: JobWatch) -> None:
        super().__init__(name="job-poller", daemon=True)
        self._api = api.clone()  # a connection of its own: httpx clients stay in one thread
        self._path = f"/jobs/{job_id}"
        self._watch = watch
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.is_set():
                try:
                    self._watch.job = self._api.get(self._path)
                    self._watch.reachable = True
                except Failure:
                    self._watch.reachable = False
                self.stopped.wait(POLL)
        finally:
            self._api.close()


@contextmanager
def live_status(api: Api, job_id: str, output: Output) -> Iterator[JobWatch]:
    """A JobWatch to feed events to; on a terminal, also shown as a live line under them."""
    watch = JobWatch()
    if not output.live:
        yield watch
        return
    poller = _Poller(api, job_id, watch)
    poller.start()
    try:
        with Live(watch, console=output.console, refresh_per_second=8, transient=True):
            yield watch
    finally:
        poller.stopped.set()
