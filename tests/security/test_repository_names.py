"""Repository names are per user: nobody learns another user's names from a 409, nobody
squats a name, each job runs on its own owner's tree; an admin names the owner."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fake_anthropic import marker
from tests.jobs.conftest import JobWorld, JobWorldFactory
from tests.security.conftest import Attacks
from tests.support.api import Api, home_of, make_git_repo
from tests.support.users import UserFactory


def shop_of(world: JobWorld) -> Api:
    """A new user whose repository `shop` holds a README naming them."""
    api = Api(world.server, world.users.create())
    world.apis.append(api)
    source = make_git_repo(home_of(api.user), api.user, {"README.md": f"{api.user.name}\n"})
    api.ready_repository("shop", source)
    return api


def readme_of_job(api: Api, job_id: str) -> str:
    response = api.http.get(f"/jobs/{job_id}/files/content", params={"path": "README.md"})
    assert response.status_code == 200, response.text
    content: str = response.json()["content"]
    return content


def ran(api: Api, job: dict[str, Any]) -> str:
    api.start(job["jobId"])
    assert api.wait_ended(job["jobId"])["status"] == "completed"
    return str(job["jobId"])


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_two_users_each_own_a_shop(
    job_world: JobWorldFactory,
    users: UserFactory,
    attacks: Attacks,
    database: str,
    request: pytest.FixtureRequest,
) -> None:
    admins = users.group()
    settings = {"ADMIN_GROUP": admins}
    if database == "postgres":
        settings["DATABASE_URL"] = request.getfixturevalue("postgres").create_database()
    world = job_world(**settings)
    alice = shop_of(world)
    bob = shop_of(world)  # alice has `shop` already: no 409, nothing learnt, nothing squatted
    attacks.tried()

    for api in (alice, bob):
        listed = api.http.get("/repositories").json()
        assert [(r["name"], r["registeredBy"]) for r in listed] == [("shop", api.user.name)]
        assert api.http.get("/repositories/shop").json()["registeredBy"] == api.user.name
        job = ran(api, api.create_job("shop", f"Hi {marker('hello')}"))
        assert api.job(job)["repository"] == "shop"
        assert readme_of_job(api, job) == f"{api.user.name}\n"  # its owner's tree

    again = alice.register("shop", str(home_of(alice.user) / "source-repo"))
    assert again.status_code == 409 and again.json()["detail"]

    # bob names alice as the owner: the same 404 as for a name nobody has
    probes = [
        ("GET", "/repositories", {}),
        ("GET", "/repositories", {"owner": "*"}),
        ("GET", "/repositories/shop", {}),
        ("POST", "/repositories/shop/pull", {}),
        ("DELETE", "/repositories/shop", {}),
    ]
    for method, path, params in probes:
        for owner in (alice.user.name, "no-such-user-here"):
            response = bob.http.request(method, path, params={"owner": owner, **params})
            attacks.tried()
            assert response.status_code == 404, (method, path, owner, response.text)
    ghost = bob.http.get("/repositories/nothing", params={"owner": alice.user.name})
    theirs = bob.http.get("/repositories/shop", params={"owner": alice.user.name})
    assert theirs.json()["detail"] == ghost.json()["detail"].replace("nothing", "shop")
    created = bob.http.post(
        "/jobs", params={"owner": alice.user.name}, json={"repository": "shop", "prompt": "x"}
    )
    attacks.tried(2)
    assert created.status_code == 404
    assert alice.http.get("/repositories/shop").json()["status"] == "ready"

    admin = Api(world.server, users.create(groups=(admins,)))
    world.apis.append(admin)
    assert admin.http.get("/repositories").json() == []  # an admin's own: none
    assert admin.http.get("/repositories/shop").status_code == 404
    everyone = admin.http.get("/repositories", params={"owner": "*"}).json()
    assert sorted(r["registeredBy"] for r in everyone if r["name"] == "shop") == sorted(
        [alice.user.name, bob.user.name]
    )
    of_bob = admin.http.get("/repositories", params={"owner": bob.user.name}).json()
    assert [(r["name"], r["registeredBy"]) for r in of_bob] == [("shop", bob.user.name)]
    reached = admin.http.get("/repositories/shop", params={"owner": alice.user.name})
    assert reached.json()["registeredBy"] == alice.user.name
    admin_job = admin.http.post(
        "/jobs",
        params={"owner": alice.user.name},
        json={"repository": "shop", "prompt": f"Hi {marker('hello')}"},
    )
    assert admin_job.status_code == 201, admin_job.text
    job = ran(admin, admin_job.json())
    assert readme_of_job(admin, job) == f"{alice.user.name}\n"

    # names and owners no repository can have: a clear 4xx, never a 500 (NUL on PostgreSQL)
    for api in (bob, admin):
        for name, owner in (("a%00b", None), ("shop", "a\x00b"), ("shop", "*"), ("é", "x")):
            params = {} if owner is None else {"owner": owner}
            response = api.http.get(f"/repositories/{name}", params=params)
            attacks.tried()
            assert response.status_code in (400, 404), (name, owner, response.text)
            assert response.json()["detail"]
        bad = api.http.post("/jobs", json={"repository": "a\x00b", "prompt": "x"})
        assert bad.status_code == 400, bad.text

    # bob's removal leaves alice's shop, and her jobs, alone
    assert bob.http.delete("/repositories/shop").status_code == 204
    assert bob.http.get("/repositories").json() == []
    assert alice.http.get("/repositories/shop").json()["status"] == "ready"
    job = ran(alice, alice.create_job("shop", f"Hi {marker('hello')}"))
    assert readme_of_job(alice, job) == f"{alice.user.name}\n"
