"""User B calls every route on user A's job and repository: always 404, and nothing of
A's changes. Members of ADMIN_GROUP see everything."""

from __future__ import annotations

from claude_batch_server.jobs import landlock
from tests.fake_anthropic import marker
from tests.fake_anthropic.images import tiny_png
from tests.jobs.conftest import JobWorldFactory
from tests.security.conftest import Attacks
from tests.support.api import Api
from tests.support.users import UserFactory


def routes(job_id: str, repo: str) -> list[tuple[str, str, dict[str, object]]]:
    png = {"files": [("file", ("x.png", tiny_png(), "image/png"))]}
    return [
        ("GET", f"/jobs/{job_id}", {}),
        ("POST", f"/jobs/{job_id}/start", {}),
        ("POST", f"/jobs/{job_id}/images", png),
        ("POST", f"/jobs/{job_id}/cancel", {}),
        ("POST", f"/jobs/{job_id}/resume", {"json": {"prompt": "steal"}}),
        ("GET", f"/jobs/{job_id}/events", {"params": {"follow": "false"}}),
        ("GET", f"/jobs/{job_id}/events", {}),
        ("GET", f"/jobs/{job_id}/diff", {}),
        ("GET", f"/jobs/{job_id}/files", {}),
        ("GET", f"/jobs/{job_id}/files/download", {"params": {"path": "README.md"}}),
        ("GET", f"/jobs/{job_id}/files/content", {"params": {"path": "README.md"}}),
        ("DELETE", f"/jobs/{job_id}", {}),
        ("GET", f"/repositories/{repo}", {}),
        ("POST", f"/repositories/{repo}/pull", {}),
        ("DELETE", f"/repositories/{repo}", {}),
        ("POST", "/jobs", {"json": {"repository": repo, "prompt": "use theirs"}}),
    ]


def snapshot(api: Api, job_id: str) -> tuple[object, ...]:
    job = api.job(job_id)
    return (job, api.events(job_id), api.http.get(f"/repositories/{api.repo}").json())


def test_cross_user_matrix(
    job_world: JobWorldFactory, users: UserFactory, attacks: Attacks
) -> None:
    admins = users.group()
    world = job_world(ADMIN_GROUP=admins)
    alice, bob = world.member(), world.member()
    ended = alice.run(alice.repo, f"Hi {marker('hello')}")["jobId"]
    alice.wait_ended(ended)
    fresh = alice.create_job(alice.repo, "not started")["jobId"]
    before = {job_id: snapshot(alice, job_id) for job_id in (ended, fresh)}

    for job_id in (ended, fresh):
        for method, path, extra in routes(job_id, alice.repo):
            response = bob.http.request(method, path, **extra)  # type: ignore[arg-type]
            attacks.tried()
            assert response.status_code == 404, (method, path, response.status_code)
    assert bob.http.get("/jobs").json()["jobs"] == []
    assert bob.http.get("/jobs", params={"user": alice.user.name}).status_code == 403
    assert [r["name"] for r in bob.http.get("/repositories").json()] == [bob.repo]
    assert bob.http.get("/system/storage").status_code == 403
    assert bob.http.get("/audit").status_code == 403
    attacks.tried(5)

    for job_id in (ended, fresh):
        assert snapshot(alice, job_id) == before[job_id]

    admin_user = users.create(groups=(admins,))
    admin = Api(world.server, admin_user)
    world.apis.append(admin)
    assert admin.http.get("/auth/me").json()["admin"] is True
    assert admin.http.get(f"/jobs/{ended}").status_code == 200
    listed = admin.http.get("/jobs", params={"user": alice.user.name}).json()["jobs"]
    assert {job["jobId"] for job in listed} == {ended, fresh}
    names = {r["name"] for r in admin.http.get("/repositories", params={"owner": "*"}).json()}
    assert {alice.repo, bob.repo} <= names
    storage = admin.http.get("/system/storage").json()
    assert storage["strategy"] == "copy" and storage["cgroup"] in {"v1", "v2"}
    assert storage["sandbox"] == (f"landlock ABI {landlock.abi()}" if landlock.abi() else "off")
