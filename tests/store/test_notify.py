"""Notifications between server processes on one PostgreSQL: delivered once the
transaction commits, to the other processes only, ids only; the listener comes back after
the database cut its connection; on SQLite there is nothing to send."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from claude_batch_server.store.db import Database
from claude_batch_server.store.notify import Notifier, Topic, publish_in
from tests.support.postgres import PostgresCluster

DEADLINE = 10.0
OTHER = "0123456789abcdef"  # the origin of another server process
JOB = "a" * 32


def from_elsewhere(database: Database, topic: Topic, payload: str) -> None:
    """A NOTIFY as another process (or any session of the database) sends it."""
    with database.connection() as connection:
        connection.execute(text("SELECT pg_notify(:c, :p)"), {"c": topic.value, "p": payload})


async def until(condition: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError(f"waited {DEADLINE}s for {what}")
        await asyncio.sleep(0.02)


def listening(
    url: str, body: Callable[[Notifier, dict[Topic, list[str]]], Coroutine[Any, Any, None]]
) -> dict[Topic, list[str]]:
    """Runs `body` with a started listener on `url` that notes every key it is handed."""
    heard: dict[Topic, list[str]] = {topic: [] for topic in Topic}

    async def main() -> None:
        notifier = Notifier(url)
        for topic in Topic:
            notifier.subscribe(topic, heard[topic].append)
        notifier.start()
        try:
            await asyncio.wait_for(notifier.listening.wait(), DEADLINE)
            await body(notifier, heard)
        finally:
            await notifier.stop()

    asyncio.run(main())
    return heard


@pytest.mark.postgres
def test_only_what_other_processes_committed_is_heard(postgres: PostgresCluster) -> None:
    url = postgres.create_database()
    database = Database(url)

    async def body(_: Notifier, heard: dict[Topic, list[str]]) -> None:
        with database.connection() as connection:  # ours: its wake-ups went directly
            publish_in(connection, Topic.CANCEL, "b" * 32)
        with pytest.raises(RuntimeError), database.connection() as connection:
            from_elsewhere_in = text("SELECT pg_notify('cbs_cancel', :p)")
            connection.execute(from_elsewhere_in, {"p": f"{OTHER}:{'c' * 32}"})
            raise RuntimeError("rolled back")
        from_elsewhere(database, Topic.CANCEL, "not ours; drop table jobs")
        from_elsewhere(database, Topic.EVENTS, f"{OTHER}:{'x' * 65}")  # no id is that long
        from_elsewhere(database, Topic.CANCEL, f"{OTHER}:{JOB}")
        await until(lambda: bool(heard[Topic.CANCEL]), "the cancel")

    try:
        heard = listening(url, body)
    finally:
        database.close()
    assert heard == {Topic.QUEUE: [], Topic.CANCEL: [JOB], Topic.EVENTS: []}


@pytest.mark.postgres
def test_the_listener_comes_back_after_losing_its_connection(postgres: PostgresCluster) -> None:
    url = postgres.create_database()
    database = Database(url)

    async def body(notifier: Notifier, heard: dict[Topic, list[str]]) -> None:
        from_elsewhere(database, Topic.QUEUE, f"{OTHER}:")
        await until(lambda: heard[Topic.QUEUE] == [""], "the first wake-up")
        postgres.cut_connections(url)
        database.engine.dispose()  # the test's own connections were cut as well
        await until(lambda: not notifier.listening.is_set(), "the loss to be noticed")
        await asyncio.wait_for(notifier.listening.wait(), DEADLINE)
        from_elsewhere(database, Topic.EVENTS, f"{OTHER}:{JOB}")
        await until(lambda: heard[Topic.EVENTS] == [JOB], "a wake-up after the loss")

    try:
        listening(url, body)
    finally:
        database.close()


def test_sqlite_has_no_listener_and_sends_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    database = Database(url)
    try:
        with database.connection() as connection:
            publish_in(connection, Topic.QUEUE)  # SQLite knows no pg_notify: nothing is sent
    finally:
        database.close()

    async def body() -> None:
        notifier = Notifier(url)
        notifier.subscribe(Topic.QUEUE, lambda _: None)
        notifier.start()
        assert notifier.listening.is_set() is False
        await notifier.stop()

    asyncio.run(body())
