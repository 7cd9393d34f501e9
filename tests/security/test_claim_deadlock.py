"""PostgreSQL: the count of changes to a user's jobs (store/migrations 0010) is one row per
user, which each change locks until its transaction ends. A start that finds a slot free
claims in its own transaction (jobs/service.py `_enqueue`), under the lock that serialises
claims; another server's claim, holding that lock, may take the same user's queued job.
Had the start changed her job before it asked for the claims' lock, each would wait for
the other: PostgreSQL ends one of them (her start answered 500, or that server's claim
failed). One user starting her jobs while others end is enough."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import text

from claude_batch_server.jobs.queue import CLAIM_LOCK, JobQueue, Limits, new_owner_id
from claude_batch_server.store.db import Database
from tests.fake_anthropic import FakeAnthropic, Hang, marker
from tests.jobs.conftest import JobWorldFactory
from tests.security.conftest import Attacks
from tests.support.postgres import PostgresCluster
from tests.support.server import wait_for

pytestmark = pytest.mark.postgres

_WAITING = text(  # for the claims' lock, in this database
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = :key"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def test_a_start_and_another_servers_claim_of_her_jobs_do_not_deadlock(
    job_world: JobWorldFactory,
    fake_anthropic: FakeAnthropic,
    postgres: PostgresCluster,
    attacks: Attacks,
) -> None:
    fake_anthropic.add_script("claim-deadlock", [Hang()])
    url = postgres.create_database()
    alice = job_world(DATABASE_URL=url, MAX_CONCURRENT_JOBS="1").member()
    hanging = alice.run(alice.repo, f"Hang {marker('claim-deadlock')}")["jobId"]
    alice.wait_status(hanging, {"running"})
    first = alice.run(alice.repo, "Queued behind it")["jobId"]  # the one slot is taken
    second = alice.create_job(alice.repo, "Started next")["jobId"]
    database = Database(url)
    other = JobQueue(database, Limits(1, 0), new_owner_id(), timedelta(minutes=5))

    def claims_waiting() -> int:
        with database.engine.connect() as probe:
            return int(probe.execute(_WAITING, {"key": CLAIM_LOCK}).scalar_one())

    try:
        with database.engine.connect() as connection, ThreadPoolExecutor(1) as pool:
            # another server's claim under way: it holds the claims' lock
            transaction = connection.begin()
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CLAIM_LOCK})
            assert alice.http.post(f"/jobs/{hanging}/cancel").status_code == 202
            alice.wait_ended(hanging)
            wait_for(lambda: claims_waiting() == 1, 60, "the server's own claim waiting")
            started = pool.submit(alice.http.post, f"/jobs/{second}/start")
            wait_for(lambda: claims_waiting() == 2, 60, "her start waiting to claim")
            attacks.tried()
            claim, _ = other.claim_in(connection)  # her first job, queued
            assert claim is not None and claim.job.id == first
            transaction.rollback()  # that server gives its claim up: queued again
            assert started.result().status_code == 202, started.result().text
        assert alice.wait_ended(first)["status"] == "completed"
        assert alice.wait_ended(second)["status"] == "completed"
    finally:
        database.close()
