"""The throttle's slots in the database, on SQLite and PostgreSQL: concurrent admissions of
one name get slots one interval apart, one address waits for one slot at most, a right
password gives its count back, and stale rows are forgotten."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from claude_batch_server.auth.throttle import Limits, Throttle
from claude_batch_server.store import migrate
from claude_batch_server.store.db import Database
from claude_batch_server.store.tables import LoginThrottle, utcnow

LIMITS = Limits(free=2, interval=timedelta(seconds=10), max_wait=timedelta(seconds=35))


@pytest.fixture
def throttle(database_url: str) -> Iterator[Throttle]:
    database = Database(database_url)
    try:
        migrate.upgrade(database)
        yield Throttle(database, LIMITS)
    finally:
        database.close()


def test_one_name_from_many_addresses_is_checked_one_interval_apart(throttle: Throttle) -> None:
    addresses = [f"10.0.0.{i}" for i in range(8)]
    with ThreadPoolExecutor(max_workers=len(addresses)) as pool:
        admissions = list(pool.map(lambda a: throttle.admit("alice", a), addresses))
    admitted = sorted(a.wait for a in admissions if a.retry_after is None)
    refused = [a.retry_after for a in admissions if a.retry_after is not None]
    # 2 free, then slots at 0, 10, 20, 30 s; the next would wait past 35 s: refused
    assert len(admitted) == 6 and len(refused) == 2
    assert admitted[:3] == [0.0, 0.0, 0.0]
    for earlier, later in itertools.pairwise(admitted[2:]):
        assert later - earlier == pytest.approx(10, abs=1)
    assert all(retry is not None and retry >= 1 for retry in refused)


def test_one_address_waits_for_one_slot_of_a_name_at_most(throttle: Throttle) -> None:
    for _ in range(LIMITS.free + 1):
        assert throttle.admit("alice", "10.0.0.1").retry_after is None
    waiting = throttle.admit("alice", "10.0.0.1")
    assert waiting.retry_after is None and waiting.wait > 5
    again = throttle.admit("alice", "10.0.0.1")
    assert again.retry_after is not None and again.retry_after >= 5
    assert throttle.admit("alice", "10.0.0.2").retry_after is None  # others queue on


def test_a_right_password_gives_its_count_back(throttle: Throttle) -> None:
    for _ in range(10):
        admission = throttle.admit("bob", "10.0.0.9")
        assert (admission.wait, admission.retry_after) == (0.0, None)  # never slowed
        throttle.record_success("bob", "10.0.0.9")


def test_stale_rows_are_forgotten(throttle: Throttle, database_url: str) -> None:
    throttle.admit("carol", "10.0.0.7")
    database = Database(database_url)
    try:
        with database.session() as session:
            for row in session.scalars(select(LoginThrottle)):
                row.last_failure = utcnow() - LIMITS.window - timedelta(seconds=1)
        throttle.prune()
        with database.read() as session:
            assert session.scalar(select(func.count()).select_from(LoginThrottle)) == 0
    finally:
        database.close()


def test_a_caller_refused_at_once_never_waits_longer_than_its_block(throttle: Throttle) -> None:
    """Admissions that queued for the caller's row behind the one that blocked it are told
    to come back when that block ends, not later."""
    callers = LIMITS.per_address + 30
    start = threading.Barrier(callers)

    def admit(i: int) -> int | None:
        start.wait()
        return throttle.admit(f"name{i}", "10.0.0.5").retry_after

    with ThreadPoolExecutor(max_workers=callers) as pool:
        refused = [r for r in pool.map(admit, range(callers)) if r is not None]
    assert len(refused) == callers - LIMITS.per_address
    assert max(refused) <= LIMITS.first_block.total_seconds()
