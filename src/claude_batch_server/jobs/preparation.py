"""A claimed job made ready to run, before any executor sees it: its workspace (made at
the claim's commit on a first run, with the images; restored on a resume), and the
command line, environment and standard input of this run (`command`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from claude_batch_server.accounts import Account
from claude_batch_server.files.safe import write_beneath
from claude_batch_server.jobs import command
from claude_batch_server.jobs.executors.base import PreparedRun
from claude_batch_server.jobs.images import ImageStore, media_type
from claude_batch_server.metrics import Metrics
from claude_batch_server.store.tables import Job
from claude_batch_server.workspaces.engine import WorkspaceEngine

IMAGE_DIR = ".claude-batch/images"


class CannotRun(Exception):
    """The job cannot run (its account is gone): it fails with this as its error."""


@dataclass(frozen=True)
class Prepared:
    run: PreparedRun
    commit: str | None  # of a workspace this run made; None on a resume


class RunPreparer:
    def __init__(
        self,
        workspaces: WorkspaceEngine,
        images: ImageStore,
        lookup: Callable[[str], Account | None],
        claude_command: str,
        max_run: timedelta,
        metrics: Metrics,
    ) -> None:
        self._workspaces = workspaces
        self._images = images
        self._lookup = lookup
        self._claude_command = claude_command
        self._max_run = max_run
        self._metrics = metrics

    def timeout(self, job: Job) -> float:
        """Seconds this run may take: options.timeout, within JOB_TIMEOUT_HOURS."""
        limit = self._max_run.total_seconds()
        asked = job.options.get("timeout")
        return min(float(asked), limit) if asked else limit

    def prepare(self, job: Job, repository_commit: str | None) -> Prepared:
        """Blocking: the workspace (made on the first run, at `repository_commit`, where the
        claim found the repository; restored on a resume) and the run's command."""
        account = self._lookup(job.user)
        if account is None:
            raise CannotRun(f"account {job.user!r} no longer exists")
        first = job.commit is None  # no workspace yet: this run makes it, with the images
        commit = None
        if first:
            if repository_commit is None:
                raise RuntimeError(f"repository {job.repository!r} is not ready")
            commit = repository_commit  # the engine makes it at this commit or not at all
            path = self._create_workspace(job, account, commit)
        else:
            self._workspaces.restore_workspace(job.id)
            path = self._workspaces.workspace_path(job.id)
        images = [self._image(job.id, name) for name in job.images] if first else []
        session = None if first else job.session_id
        line = command.arguments(self._claude_command, job.options, session, bool(images))
        stdin = command.stdin(job.run_prompt, images, IMAGE_DIR if images else None)
        env = command.environment(account)
        run = PreparedRun(
            job.id, account, line.argv, env, path, stdin, self.timeout(job), line.files
        )
        return Prepared(run, commit)

    def _create_workspace(self, job: Job, account: Account, commit: str) -> Path:
        started = time.perf_counter()
        path = self._workspaces.create_workspace(job.repository_id, commit, job.id, account)
        self._metrics.workspace_seconds.labels(self._workspaces.strategy_name).observe(
            time.perf_counter() - started
        )
        owner = (account.uid, account.gid)
        for name in job.images:
            data = self._images.read(job.id, name)
            write_beneath(path, f"{IMAGE_DIR}/{name}", data, owner)
        if job.images:
            write_beneath(path, ".git/info/exclude", b"\n/.claude-batch/\n", owner, append=True)
        return path

    def _image(self, job_id: str, name: str) -> command.Image:
        data = self._images.read(job_id, name)
        return command.Image(name, media_type(data[:16]) or "image/png", data)
