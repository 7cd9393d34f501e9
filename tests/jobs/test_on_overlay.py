"""The default on a plain disk: `auto` picks overlay. A job there, and after a reboot."""

from __future__ import annotations

import subprocess

from tests.fake_anthropic import marker
from tests.jobs.conftest import JobWorldFactory
from tests.support.users import UserFactory


def test_a_job_on_overlay_survives_a_reboot(job_world: JobWorldFactory, users: UserFactory) -> None:
    admins = users.group()
    world = job_world(COW_STRATEGY="auto", ADMIN_GROUP=admins)
    alice = world.member()
    job_id = alice.run(alice.repo, f"Write {marker('two-answers')}")["jobId"]
    assert alice.wait_ended(job_id)["status"] == "completed"
    alice.http.post(f"/jobs/{job_id}/resume", json={"prompt": "and write"})
    alice.wait_ended(job_id)
    workspace = world.server.data_dir / "workspaces" / job_id
    (workspace / "mine.txt").write_text("kept\n")
    subprocess.run(["chown", f"{alice.user.name}:", str(workspace / "mine.txt")], check=True)

    world.server.stop()
    # a reboot: the overlay mount is gone, its upper layer stays on disk
    subprocess.run(["umount", str(workspace)], check=True)
    assert not (workspace / "mine.txt").exists()
    world.server.start()

    content = alice.http.get(f"/jobs/{job_id}/files/content", params={"path": "mine.txt"})
    assert content.json()["content"] == "kept\n"
    assert "+kept" in alice.http.get(f"/jobs/{job_id}/diff").text
    resumed = alice.http.post(f"/jobs/{job_id}/resume", json={"prompt": "once more"})
    assert resumed.status_code == 202
    assert alice.wait_ended(job_id)["status"] == "completed"
    overseer = users.create(groups=(admins,))
    token = world.server.login(overseer.name, overseer.password)
    with world.server.client(token) as client:
        assert client.get("/system/storage").json()["strategy"] == "overlay"
