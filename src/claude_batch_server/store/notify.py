"""Wake-ups between the server processes that share one PostgreSQL database (LISTEN/NOTIFY).

Several servers may serve one database (behind one proxy, sharing DATA_DIR). What one of
them changes, another may have to act on at once: a job queued while this process is full
(another claims it), a cancel of a job that runs elsewhere (its process stops it), new
transcript events (the followers connected elsewhere read them). `publish_in` notifies
inside the transaction that made the change, so PostgreSQL delivers it once that commits,
and never if it rolls back; each process's `Notifier` listens on one connection of its own
and hands what arrives to the handlers subscribed in this process.

A notification is a hint to look, never a fact: any session of the database may LISTEN and
NOTIFY, so a payload is an id and nothing else (no secret, no user text), and a handler
reads the database before it acts. Within a process the wake-ups go directly (its own
notifications are dropped when they come back); on SQLite there is only that. The
dispatcher's tick stays the fallback for a notification missed while the listener was
reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from collections import defaultdict
from collections.abc import Callable
from enum import StrEnum

import psycopg
from psycopg import sql
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from claude_batch_server.logs import log


class Topic(StrEnum):
    """The channels; the key each one carries."""

    QUEUE = "cbs_queue"  # none: a job was queued, or a run ended and its slot is free
    CANCEL = "cbs_cancel"  # a job's id: its cancel was asked for
    EVENTS = "cbs_events"  # a job's id: its transcript grew (a run's end included)


Handler = Callable[[str], None]  # called with the key, in the event loop's thread

# this process, in its notifications: what comes back from ourselves is dropped
ORIGIN = secrets.token_hex(8)
_PAYLOAD = re.compile(r"([0-9a-f]{16}):([0-9A-Za-z_-]{0,64})")
_NOTIFY = text("SELECT pg_notify(:channel, :payload)")
RECONNECT_FIRST = 0.2  # seconds before the listener connects again after a loss
RECONNECT_MAX = 5.0  # the pause doubles after each failed try, up to this
PING_EVERY = 30.0  # seconds without a notification after which the connection is checked


def publish_in(unit: Session | Connection, topic: Topic, key: str = "") -> None:
    """Tells the other processes on the database about `key` once the transaction of `unit`
    (a `Database.session` or `connection`) commits; nothing on SQLite, where one process
    serves. `key` is an id: never anything secret or written by a user."""
    connection = unit.connection() if isinstance(unit, Session) else unit
    if connection.dialect.name != "postgresql":
        return
    connection.execute(_NOTIFY, {"channel": topic.value, "payload": f"{ORIGIN}:{key}"})


def conninfo(url: str) -> str | None:
    """What libpq takes for the database of `url`; None when it is no PostgreSQL one."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return None
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


class Notifier:
    """This process's listener: one connection of its own that LISTENs on every topic with
    a handler, connected again whenever it is lost. Without a PostgreSQL URL it does
    nothing."""

    def __init__(self, url: str) -> None:
        self._conninfo = conninfo(url)
        self._handlers: dict[Topic, list[Handler]] = defaultdict(list)
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()  # set while the LISTENs are in place

    def subscribe(self, topic: Topic, handler: Handler) -> None:
        """Before `start`: `handler(key)` runs for every notification of `topic` from
        another process."""
        self._handlers[topic].append(handler)

    def start(self) -> None:
        if self._conninfo is not None and self._handlers:
            self._task = asyncio.create_task(self._listen_loop(self._conninfo), name="notify")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen_loop(self, info: str) -> None:
        pause = RECONNECT_FIRST
        while True:
            try:
                await self._listen(info)
            except (psycopg.Error, OSError) as error:
                log.warning("notification listener lost the database", error=str(error))
            if self.listening.is_set():  # it was listening: a loss, not a failed try
                self.listening.clear()
                pause = RECONNECT_FIRST
            await asyncio.sleep(pause)
            pause = min(pause * 2, RECONNECT_MAX)

    async def _listen(self, info: str) -> None:
        async with await psycopg.AsyncConnection.connect(info, autocommit=True) as connection:
            for topic in self._handlers:
                await connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(topic.value)))
            self.listening.set()
            while True:
                async for notification in connection.notifies(timeout=PING_EVERY):
                    self._deliver(notification.channel, notification.payload)
                await connection.execute("SELECT 1")  # a quiet while: is it still there?

    def _deliver(self, channel: str, payload: str) -> None:
        match = _PAYLOAD.fullmatch(payload)
        if match is None or match[1] == ORIGIN:
            return  # not one of ours, or our own, whose wake-ups went directly
        for handler in self._handlers.get(Topic(channel), ()):
            try:
                handler(match[2])
            except Exception:
                log.exception("notification handler failed", channel=channel)
