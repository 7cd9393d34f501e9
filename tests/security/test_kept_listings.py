"""GET /jobs keeps the pages it sent while the database's count of changes to their
owner's jobs stays the same (api/listings.py). Attacked as a local user would: ask for
another user's kept page (her name as `user=` in other cases and spacings, her cursor,
the queries she asked), as a member and as an admin; and change her jobs by every
route that writes them, then look for the page as it was."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from claude_batch_server.store.db import Database
from claude_batch_server.store.tables import JOB_VERSIONS
from tests.fake_anthropic.images import tiny_png
from tests.jobs.conftest import JobWorldFactory
from tests.security.conftest import Attacks
from tests.support.api import Api
from tests.support.users import UserFactory

QUERIES: list[dict[str, Any]] = [{}, {"limit": 2}, {"limit": 1}, {"status": "created"}]


def listed(api: Api, params: dict[str, Any]) -> dict[str, Any]:
    answer = api.http.get("/jobs", params=params)
    assert answer.status_code == 200, answer.text
    page: dict[str, Any] = answer.json()
    return page


def test_no_one_is_served_another_users_kept_page(
    job_world: JobWorldFactory, users: UserFactory, attacks: Attacks, database_url: str
) -> None:
    admins = users.group()
    world = job_world(ADMIN_GROUP=admins, DATABASE_URL=database_url)
    alice, bob = world.member(), world.member()
    admin = Api(world.server, users.create(groups=(admins,)))
    world.apis.append(admin)
    hers = {alice.create_job(alice.repo, f"her secret {n}")["jobId"] for n in range(3)}
    # as many changes to his jobs as to hers: the same count, his own pages
    for n in range(3):
        bob.create_job(bob.repo, f"his own {n}")
    for params in QUERIES:  # kept: asked twice, the same page
        assert listed(alice, params) == listed(alice, params)
    cursor = listed(alice, {"limit": 1})["nextCursor"]
    assert cursor
    name = alice.user.name
    lookalikes = [name.upper(), name.capitalize(), f"{name} ", f" {name}", f"{name}\t", "*"]

    asked = [
        *QUERIES,
        {"limit": 1, "cursor": cursor},
        *({"user": other} for other in [name, *lookalikes]),
        {"user": name, "cursor": cursor, "limit": 1},
    ]
    for params in asked:
        attacks.tried()
        answer = bob.http.get("/jobs", params=params)
        assert answer.status_code in (200, 403), (params, answer.text)
        if answer.status_code == 200:
            jobs = answer.json()["jobs"]
            assert all(job["user"] == bob.user.name for job in jobs), params
    # an admin, who may list anyone's: her page under her name alone
    for params in [*QUERIES, {"limit": 1, "cursor": cursor}, *({"user": o} for o in lookalikes)]:
        attacks.tried()
        if params.get("user") == "*":
            continue  # every user's, hers too: asked for
        jobs = listed(admin, params)["jobs"]
        assert not {job["jobId"] for job in jobs} & hers, params
    attacks.tried()
    assert {job["jobId"] for job in listed(admin, {"user": name})["jobs"]} == hers
    for params in QUERIES:  # and hers is still hers
        assert {job["jobId"] for job in listed(alice, params)["jobs"]} <= hers
    # the counts of changes: one for each user whose jobs changed, none for a name asked
    store = Database(database_url)
    try:
        with store.read_connection() as connection:
            counted = set(connection.scalars(select(JOB_VERSIONS.c.user)))
    finally:
        store.close()
    assert counted == {name, bob.user.name}


def test_a_kept_page_shows_every_change_made_through_the_api(
    job_world: JobWorldFactory, attacks: Attacks, database_url: str
) -> None:
    alice = job_world(DATABASE_URL=database_url).member()
    made = [alice.create_job(alice.repo, f"Say hi {n}")["jobId"] for n in range(4)]

    def current() -> None:
        """Each query of hers, asked twice (kept), as her jobs' own answers are."""
        for params in QUERIES:
            page = listed(alice, params)
            assert page == listed(alice, params)
            assert page["jobs"] == [alice.job(job["jobId"]) for job in page["jobs"]], params

    current()

    def run() -> None:
        alice.start(made[3])
        alice.wait_ended(made[3])

    def run_again() -> None:
        assert alice.http.post(f"/jobs/{made[3]}/resume", json={"prompt": "Again"}).is_success
        alice.wait_ended(made[3])

    png = ("file", ("pic.png", tiny_png(), "image/png"))
    changes = [
        lambda: alice.http.post(f"/jobs/{made[0]}/images", files=[png]),
        lambda: alice.http.post(f"/jobs/{made[1]}/cancel"),
        lambda: alice.http.delete(f"/jobs/{made[2]}"),
        run,
        run_again,
    ]
    for change in changes:
        attacks.tried()
        change()
        current()
