"""Workspaces kept after their jobs ended, and how long: removed past JOB_RETENTION_DAYS
(a job whose workspace is gone can no longer be resumed), and remounted after a restart
(an overlay's mount went with the server's namespace)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from claude_batch_server.jobs.images import ImageStore
from claude_batch_server.jobs.status import ENDED
from claude_batch_server.jobs.transitions import Transitions
from claude_batch_server.store.db import Database
from claude_batch_server.store.tables import JOBS, utcnow
from claude_batch_server.workspaces.engine import WorkspaceEngine


class Retention:
    def __init__(
        self,
        database: Database,
        workspaces: WorkspaceEngine,
        images: ImageStore,
        transitions: Transitions,
    ) -> None:
        self._database = database
        self._workspaces = workspaces
        self._images = images
        self._transitions = transitions

    def expire_workspaces(self, retention: timedelta) -> int:
        """Removes the workspaces of jobs that ended more than `retention` ago."""
        query = select(JOBS.c.id).where(
            JOBS.c.status.in_(list(ENDED)),
            JOBS.c.completed_at < utcnow() - retention,
            JOBS.c.workspace_removed.is_(False),
        )
        with self._database.read_connection() as connection:
            ids = list(connection.scalars(query))
        for job_id in ids:
            self._workspaces.remove_workspace(job_id)
            self._images.remove(job_id)
            with self._database.connection() as connection:
                self._transitions.workspace_removed(connection, job_id)
        return len(ids)

    def restore_workspaces(self) -> int:
        """After a restart: makes every kept workspace usable again (overlays remounted)."""
        query = select(JOBS.c.id).where(
            JOBS.c.commit.is_not(None), JOBS.c.workspace_removed.is_(False)
        )
        with self._database.read_connection() as connection:
            ids = list(connection.scalars(query))
        for job_id in ids:
            self._workspaces.restore_workspace(job_id)
        return len(ids)
