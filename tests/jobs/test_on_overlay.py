"""The default on a plain disk: `auto` picks overlay. The server mounts its workspaces in a
mount namespace of its own: however it stops, none is left in the host's mount table, and
the restarted server mounts a retained job's workspace again and serves it."""

from __future__ import annotations

import signal
import subprocess

from tests.fake_anthropic import marker
from tests.jobs.conftest import JobWorldFactory
from tests.support.mounts import mounts_beneath
from tests.support.users import UserFactory


def test_a_job_on_overlay_survives_stops_and_leaves_no_mount(
    job_world: JobWorldFactory, users: UserFactory
) -> None:
    admins = users.group()
    world = job_world(COW_STRATEGY="auto", ADMIN_GROUP=admins)
    server, alice = world.server, world.member()
    job_id = alice.run(alice.repo, f"Write {marker('two-answers')}")["jobId"]
    assert alice.wait_ended(job_id)["status"] == "completed"
    alice.http.post(f"/jobs/{job_id}/resume", json={"prompt": "and write"})
    alice.wait_ended(job_id)
    workspace = server.data_dir / "workspaces" / job_id
    assert server.process is not None
    assert mounts_beneath(server.data_dir, server.process.pid) == [str(workspace)]
    assert mounts_beneath(server.data_dir) == []  # never in the host's table
    mine = server.inside(workspace) / "mine.txt"
    mine.write_text("kept\n")
    subprocess.run(["chown", f"{alice.user.name}:", str(mine)], check=True)

    for stop in (signal.SIGTERM, signal.SIGKILL):
        server.stop(stop)
        assert mounts_beneath(server.data_dir) == []
        assert not (workspace / "mine.txt").exists()  # the upper layer is not in view
        server.start()
        content = alice.http.get(f"/jobs/{job_id}/files/content", params={"path": "mine.txt"})
        assert content.status_code == 200 and content.json()["content"] == "kept\n"
        assert "+kept" in alice.http.get(f"/jobs/{job_id}/diff").text

    resumed = alice.http.post(f"/jobs/{job_id}/resume", json={"prompt": "once more"})
    assert resumed.status_code == 202
    assert alice.wait_ended(job_id)["status"] == "completed"
    overseer = users.create(groups=(admins,))
    token = server.login(overseer.name, overseer.password)
    with server.client(token) as client:
        assert client.get("/system/storage").json()["strategy"] == "overlay"
