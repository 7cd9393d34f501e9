"""A job's event stream (Server-Sent Events), resumed with Last-Event-ID when it drops."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from claude_batch_server.client.errors import Unreachable
from claude_batch_server.client.http import Api

FIRST_RETRY = 0.5  # seconds; doubled on each failed attempt up to LAST_RETRY
LAST_RETRY = 5.0
GIVE_UP = 600.0  # seconds without a connection before following fails

Event = dict[str, Any]


@dataclass(frozen=True)
class Message:
    event: str
    data: str
    id: str | None


def sse_messages(lines: Iterable[str]) -> Iterator[Message]:
    """The messages of an SSE stream, as the HTML spec parses them (comments are pings)."""
    event, last_id = "", None
    data: list[str] = []
    for line in lines:
        if not line:
            if data or event:
                yield Message(event or "message", "\n".join(data), last_id)
            event = ""
            data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id":
            last_id = value


class EventFollower:
    """Iterating yields the job's events after `after`, live, until the job has ended.

    A dropped connection or a server restart is retried from the last event seen, so no
    event is shown twice or lost; `note` is told about the outage and the recovery."""

    def __init__(
        self, api: Api, job_id: str, *, after: int = 0, note: Callable[[str], None]
    ) -> None:
        self._api = api
        self._path = f"/jobs/{job_id}/events"
        self.last_seq = after
        self._note = note

    def __iter__(self) -> Iterator[Event]:
        delay, lost_since = FIRST_RETRY, None
        while True:
            headers = {"Accept": "text/event-stream", "Last-Event-ID": str(self.last_seq)}
            try:
                with self._api.stream(self._path, headers=headers) as response:
                    if lost_since is not None:
                        self._note(f"reconnected; resuming after event {self.last_seq}")
                        delay, lost_since = FIRST_RETRY, None
                    for message in sse_messages(response.iter_lines()):
                        if message.event == "end":
                            return
                        event = self._decode(message)
                        if event is not None:
                            yield event
                cause = "the stream ended early"
            except Unreachable as error:
                cause = error.reason
            now = time.monotonic()
            if lost_since is None:
                lost_since = now
                self._note(f"connection lost ({cause}); reconnecting…")
            elif now - lost_since > GIVE_UP:
                raise Unreachable(
                    f"gave up reconnecting to {self._api.server} after {GIVE_UP:g} s: {cause}"
                )
            time.sleep(delay)
            delay = min(delay * 2, LAST_RETRY)

    def _decode(self, message: Message) -> Event | None:
        if message.event != "message":
            return None
        try:
            event = json.loads(message.data)
            seq = int(message.id) if message.id else int(event["seq"])
        except (ValueError, KeyError, TypeError):
            return None  # not an event of ours: nothing to show or resume from
        if seq <= self.last_seq or not isinstance(event, dict):
            return None
        self.last_seq = seq
        return event


def events_so_far(api: Api, job_id: str, after: int = 0) -> Iterator[Event]:
    """The job's events after `after`, read a page at a time, never all at once."""
    while page := api.get(f"/jobs/{job_id}/events", follow="false", after=after):
        yield from page
        after = int(page[-1]["seq"])


def last_seq(api: Api, job_id: str) -> int:
    """The sequence number of the job's last event so far (0 if none)."""
    seq = 0
    for event in events_so_far(api, job_id):
        seq = int(event["seq"])
    return seq
