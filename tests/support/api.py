"""A thin test client for the live server: what a user's script would do over HTTP."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from claude_batch_server.store.db import Database
from claude_batch_server.store.tables import Repository
from tests.support.server import LiveServer, wait_for
from tests.support.users import OsUser

ENDED = {"completed", "failed", "timeout", "cancelled"}


class Api:
    def __init__(self, server: LiveServer, user: OsUser) -> None:
        self.server = server
        self.user = user
        self.token = server.login(user.name, user.password)
        self.http = server.client(self.token)
        self.repo = ""  # the repository this user registered, when one is made for them

    def close(self) -> None:
        self.http.close()

    def register(self, name: str, git_url: str, **extra: Any) -> httpx.Response:
        return self.http.post(
            "/repositories/register", json={"name": name, "gitUrl": git_url, **extra}
        )

    def wait_repository(self, name: str, deadline: float = 60) -> dict[str, Any]:
        def settled() -> dict[str, Any] | None:
            body: dict[str, Any] = self.http.get(f"/repositories/{name}").json()
            return body if body["status"] != "cloning" else None

        result: dict[str, Any] = wait_for(settled, deadline, f"repository {name}", 0.1)
        return result

    def ready_repository(self, name: str, source: Path) -> dict[str, Any]:
        assert self.register(name, str(source)).status_code == 202
        repo = self.wait_repository(name)
        assert repo["status"] == "ready", repo
        self.repo = name
        return repo

    def create_job(self, repository: str, prompt: str, **extra: Any) -> dict[str, Any]:
        response = self.http.post(
            "/jobs", json={"repository": repository, "prompt": prompt, **extra}
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    def start(self, job_id: str) -> dict[str, Any]:
        response = self.http.post(f"/jobs/{job_id}/start")
        assert response.status_code == 202, response.text
        body: dict[str, Any] = response.json()
        return body

    def run(self, repository: str, prompt: str, **extra: Any) -> dict[str, Any]:
        job = self.create_job(repository, prompt, **extra)
        self.start(job["jobId"])
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.http.get(f"/jobs/{job_id}").json()
        return body

    def wait_status(self, job_id: str, statuses: set[str], deadline: float = 120) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if job["status"] in statuses else None

        result: dict[str, Any] = wait_for(reached, deadline, f"job {job_id} to be {statuses}", 0.1)
        return result

    def jobs_in(self, status: str) -> list[dict[str, Any]]:
        """The caller's jobs in `status`, newest first (one page)."""
        page = self.http.get("/jobs", params={"status": status, "limit": 500}).json()
        jobs: list[dict[str, Any]] = page["jobs"]
        return jobs

    def wait_ended(self, job_id: str, deadline: float = 120) -> dict[str, Any]:
        return self.wait_status(job_id, ENDED, deadline)

    def events(self, job_id: str) -> list[dict[str, Any]]:
        body: list[dict[str, Any]] = self.http.get(
            f"/jobs/{job_id}/events", params={"follow": "false"}
        ).json()
        return body


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        [
            "git",
            "-c",
            "safe.directory=*",
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.invalid",
            *args,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def make_git_repo(parent: Path, owner: OsUser | None, files: dict[str, str] | None = None) -> Path:
    """A small git repository with one commit, under `parent`, owned by `owner`."""
    repo = parent / "source-repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for name, text in (files or {"README.md": "# hello\n", "src/app.py": "print('hi')\n"}).items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    if owner is not None:
        subprocess.run(["chown", "-R", f"{owner.name}:", str(repo)], check=True)
    return repo


def home_of(user: OsUser) -> Path:
    return Path(f"~{user.name}").expanduser()


def stored_repository(server: LiveServer, owner: str, name: str) -> Path:
    """Where `server` keeps `owner`'s repository `name`: DATA_DIR/repos/<its id>, the id
    read from the server's database (the API does not tell it)."""
    database = Database(server.env.get("DATABASE_URL") or f"sqlite:///{server.data_dir}/server.db")
    try:
        with database.read() as session:
            repo_id = session.scalars(
                select(Repository.id).where(
                    Repository.registered_by == owner, Repository.name == name
                )
            ).one()
    finally:
        database.close()
    return server.data_dir / "repos" / repo_id
