"""What a server does at start and then now and again: finish what a stopped server left
(jobs, clones, the diffs' temporary folders), mount the overlay workspaces it kept again
(its mounts went with its namespace), and remove workspaces past JOB_RETENTION_DAYS."""

from __future__ import annotations

from datetime import timedelta

import anyio

from claude_batch_server.files import diffs
from claude_batch_server.logs import log
from claude_batch_server.services import Services

RETENTION_EVERY = 3600.0  # seconds between retention sweeps


def recover(services: Services) -> None:
    """Blocking, at start: end the jobs a dead server left running, remount workspaces."""
    ended = services.dispatcher.recover()
    swept = services.dispatcher.sweep()
    services.workspaces.collect()  # scratch of dead processes, trees no workspace uses
    diffs_swept = diffs.sweep()  # their groups were killed with the jobs' (`sweep` above)
    restored = services.retention.restore_workspaces()
    log.info(
        "recovered",
        jobs_ended=ended,
        groups_killed=swept,
        diff_folders_removed=diffs_swept,
        workspaces_restored=restored,
    )


async def restart_clones(services: Services) -> None:
    for repo_id in services.repositories.resume_interrupted():
        await anyio.to_thread.run_sync(services.repositories.clone, repo_id)


async def retention_loop(services: Services) -> None:
    retention = timedelta(days=services.settings.JOB_RETENTION_DAYS)
    while True:
        try:
            removed = await anyio.to_thread.run_sync(
                services.retention.expire_workspaces, retention
            )
            if removed:
                log.info("retention", workspaces_removed=removed)
        except Exception:
            log.exception("retention sweep failed")
        await anyio.sleep(RETENTION_EVERY)
