"""A DATA_DIR of a server from before per-user repository names (migration 0003) keeps
working after the upgrade: its stored tree, a retained job's workspace (its files and
diff), and jobs on the repository; another user may now register the same name."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from sqlalchemy import MetaData

from claude_batch_server import accounts
from claude_batch_server.settings import CowStrategy
from claude_batch_server.store import migrate
from claude_batch_server.store.db import Database
from claude_batch_server.workspaces import WorkspaceEngine, linux
from tests.fake_anthropic import marker
from tests.jobs.conftest import JobWorldFactory
from tests.support.api import Api, git, home_of, make_git_repo
from tests.support.users import OsUser, UserFactory


def server_of_0003(data_dir: Path, owner: OsUser) -> tuple[str, str]:
    """What a server of 0003 left: `owner`'s repository `shop` stored under its name, and a
    completed job of theirs whose workspace the job changed; then the machine rebooted.
    Returns the job's id and the commit."""
    source = make_git_repo(home_of(owner), owner, {"README.md": "legacy\n"})
    commit = git(source, "rev-parse", "HEAD")
    engine = WorkspaceEngine(data_dir, CowStrategy.AUTO)  # overlay on a plain disk
    staging = data_dir / "staging" / "clone"
    staging.parent.mkdir()
    shutil.chown(staging.parent, owner.name)
    clone = ["runuser", "-u", owner.name, "--", "git", "clone", "-q", str(source), str(staging)]
    subprocess.run(clone, check=True, cwd="/")  # as the server cloned: as its user
    engine.adopt_repository(staging, "shop")
    account = accounts.lookup(owner.name)
    assert account is not None
    job_id = uuid.uuid4().hex
    workspace = engine.create_workspace("shop", commit, job_id, account)
    (workspace / "README.md").write_text("legacy\nchanged by the job\n")

    database = Database(f"sqlite:///{data_dir / 'server.db'}")
    try:
        config = migrate.alembic_config()
        with database.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0003")
            tables = MetaData()
            tables.reflect(connection, only=["repositories", "jobs"])
            now = datetime.now(UTC)
            connection.execute(
                tables.tables["repositories"].insert(),
                {
                    **{"name": "shop", "git_url": str(source), "description": ""},
                    **{"status": "ready", "commit": commit, "branch": "main"},
                    **{"registered_by": owner.name, "registered_at": now, "last_pull": now},
                },
            )
            connection.execute(
                tables.tables["jobs"].insert(),
                {
                    **{"id": job_id, "user": owner.name, "repository": "shop"},
                    **{"prompt": "p", "run_prompt": "p", "options": {}, "images": []},
                    **{"expected_images": [], "status": "completed", "created_at": now},
                    **{"started_at": now, "completed_at": now, "runs": 1, "commit": commit},
                    **{"cancel_requested": False, "workspace_removed": False, "cost_usd": 0.0},
                    **{"num_turns": 1, "input_tokens": 0, "output_tokens": 0, "exit_code": 0},
                },
            )
    finally:
        database.close()
    shutil.rmtree(staging.parent)
    if linux.is_mount_point(workspace):
        linux.unmount(workspace)  # a reboot: the server mounts it again at start
    return job_id, commit


def readme(api: Api, job_id: str) -> str:
    response = api.http.get(f"/jobs/{job_id}/files/content", params={"path": "README.md"})
    assert response.status_code == 200, response.text
    content: str = response.json()["content"]
    return content


def test_a_data_dir_of_0003_keeps_working(
    job_world: JobWorldFactory, users: UserFactory, open_tmp: Path
) -> None:
    data_dir = open_tmp / "legacy"
    data_dir.mkdir(mode=0o755)
    alice_user = users.create()
    old_job, commit = server_of_0003(data_dir, alice_user)

    world = job_world(data_dir=data_dir, COW_STRATEGY="auto")
    alice = Api(world.server, alice_user)
    world.apis.append(alice)
    listed = alice.http.get("/repositories").json()
    assert [(r["name"], r["status"], r["commit"]) for r in listed] == [("shop", "ready", commit)]
    assert readme(alice, old_job) == "legacy\nchanged by the job\n"
    assert "+changed by the job" in alice.http.get(f"/jobs/{old_job}/diff").text

    job = alice.run("shop", f"Hi {marker('hello')}")["jobId"]
    assert alice.wait_ended(job)["status"] == "completed"
    assert readme(alice, job) == "legacy\n"  # the stored tree of before
    resumed = alice.http.post(f"/jobs/{old_job}/resume", json={"prompt": "again"})
    assert resumed.status_code == 202, resumed.text
    assert alice.wait_ended(old_job)["status"] == "completed"
    assert readme(alice, old_job) == "legacy\nchanged by the job\n"

    bob = world.member({"README.md": "bob's\n"})  # the name is free for others now
    bob.ready_repository("shop", home_of(bob.user) / "source-repo")
    job = bob.run("shop", f"Hi {marker('hello')}")["jobId"]
    assert bob.wait_ended(job)["status"] == "completed"
    assert readme(bob, job) == "bob's\n"

    assert alice.http.delete(f"/jobs/{old_job}").status_code == 204
    assert alice.http.delete("/repositories/shop").status_code == 204
    assert not (data_dir / "repos" / "shop").exists()
    assert bob.http.get("/repositories/shop").json()["status"] == "ready"
