"""For ADMIN_GROUP: every user's jobs, the queue and what runs, the audit trail, storage."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request
from starlette.responses import Response

from claude_batch_server.api.deps import ServicesDep
from claude_batch_server.errors import Forbidden
from claude_batch_server.jobs.reading import ALL_USERS, CURSOR_PATTERN
from claude_batch_server.jobs.status import JobStatus
from claude_batch_server.web.deps import page_router
from claude_batch_server.web.render import page
from claude_batch_server.web.session import PageUser

router = page_router()
SHOWN = 100  # rows of each table


@router.get("/admin")
def admin_page(
    request: Request,
    user: PageUser,
    services: ServicesDep,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN)] = None,
) -> Response:
    if not user.admin:
        raise Forbidden("this page is for members of ADMIN_GROUP")
    jobs = services.job_reader
    running = jobs.page(user, JobStatus.RUNNING, SHOWN, None, ALL_USERS).jobs
    queued = jobs.page(user, JobStatus.QUEUED, SHOWN, None, ALL_USERS).jobs
    recent = jobs.page(user, None, SHOWN, cursor, ALL_USERS)
    return page(
        request,
        "admin.html",
        running=running,
        queued=sorted(queued, key=lambda job: jobs.position(job) or 0),
        positions={job.id: jobs.position(job) for job in queued},
        recent=recent.jobs,
        next_cursor=recent.next_cursor,
        totals=jobs.totals_by_user(),
        audit=services.auditor.recent(user=None, since=None, limit=SHOWN),
        storage=services.workspaces.report(),
    )
