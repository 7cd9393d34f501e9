"""The caller's jobs, a new job, and one job: its header, transcript and actions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any

import anyio
from fastapi import File, Form, Header, Query, Request, UploadFile
from pydantic import ValidationError
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.responses import RedirectResponse, Response

from claude_batch_server.api.deps import ClientAddress, ServicesDep
from claude_batch_server.api.schemas.jobs import MAX_PROMPT, CreateJobRequest
from claude_batch_server.auth.service import User
from claude_batch_server.errors import BadRequest
from claude_batch_server.jobs.images import MAX_IMAGE_BYTES
from claude_batch_server.jobs.reading import CURSOR_PATTERN
from claude_batch_server.jobs.service import JobRequest
from claude_batch_server.jobs.status import ACTIVE, JobStatus
from claude_batch_server.repositories.service import RepoStatus
from claude_batch_server.services import Services
from claude_batch_server.store.tables import Job
from claude_batch_server.web import transcript
from claude_batch_server.web.deps import FormJob, PageJob, page_router
from claude_batch_server.web.render import TEMPLATES, page
from claude_batch_server.web.session import FormUser, PageUser

router = page_router()
PAGE_SIZE = 25  # jobs per page of the list
TRANSCRIPT_PAGE = 500  # events per page of a transcript: 10,000 stay quick to open
LIVE = frozenset({*ACTIVE, JobStatus.CREATED})
Text = Annotated[str, Form(max_length=MAX_PROMPT)]
Short = Annotated[str, Form(max_length=1000)]


def _status(value: str) -> JobStatus | None:
    """The filter's status; empty (the form's "any") is none."""
    if value not in {"", *JobStatus}:
        raise BadRequest(f"unknown status {value!r}")
    return JobStatus(value) if value else None


def _list_context(
    user: User, services: Services, status: str, repository: str, cursor: str | None
) -> dict[str, Any]:
    result = services.job_reader.page(
        user, _status(status), PAGE_SIZE, cursor or None, None, repository or None
    )
    return {
        "jobs": result.jobs,
        "next_cursor": result.next_cursor,
        "live": any(job.status in LIVE for job in result.jobs),
        "filters": {"status": status or "", "repository": repository or "", "cursor": cursor},
    }


Status = Annotated[str, Query(max_length=16)]
RepoFilter = Annotated[str, Query(max_length=100)]
Cursor = Annotated[str | None, Query(pattern=CURSOR_PATTERN)]


@router.get("/")
def jobs_page(
    request: Request,
    user: PageUser,
    services: ServicesDep,
    status: Status = "",
    repository: RepoFilter = "",
    cursor: Cursor = None,
) -> Response:
    context = _list_context(user, services, status, repository, cursor)
    repositories = services.repositories.all_visible(user)
    return page(
        request, "jobs.html", statuses=list(JobStatus), repositories=repositories, **context
    )


@router.get("/jobs/rows")
def jobs_rows(
    request: Request,
    user: PageUser,
    services: ServicesDep,
    status: Status = "",
    repository: RepoFilter = "",
    cursor: Cursor = None,
) -> Response:
    """The list's rows again, while some job in it may still change."""
    context = _list_context(user, services, status, repository, cursor)
    return page(request, "jobs_rows.html", **context)


@router.get("/jobs/new")
def new_job_page(request: Request, user: PageUser, services: ServicesDep) -> Response:
    ready = [r for r in services.repositories.all_visible(user) if r.status == RepoStatus.READY]
    return page(request, "new_job.html", repositories=ready)


def _tools(text: str) -> list[str] | None:
    names = [name.strip() for name in text.replace("\n", ",").split(",") if name.strip()]
    return names or None


def _job_request(repository: str, prompt: str, options: dict[str, Any]) -> JobRequest:
    """Checked by the API's own schema, so a form gets the same bounds as a POST /jobs.
    Its images are uploaded before it starts, so none is named ahead."""
    body = {"repository": repository, "prompt": prompt}
    kept = {name: value for name, value in options.items() if value}
    try:
        valid = CreateJobRequest.model_validate({**body, "options": kept})
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        raise BadRequest(problems) from None
    options = valid.options.model_dump(by_alias=True, exclude_none=True)
    return JobRequest(valid.prompt, valid.repository, options)


async def _read_images(files: list[UploadFile]) -> list[tuple[str | None, bytes]]:
    parts: list[tuple[str | None, bytes]] = []
    for upload in files:
        if not upload.filename:
            continue  # the empty part a form sends when no file was picked
        data = await upload.read(MAX_IMAGE_BYTES + 1)
        if len(data) > MAX_IMAGE_BYTES:
            raise BadRequest(f"{upload.filename}: larger than 10 MiB")
        parts.append((upload.filename, data))
    return parts


@router.post("/jobs/new")
async def create_job(
    user: FormUser,
    services: ServicesDep,
    address: ClientAddress,
    repository: Short,
    prompt: Text,
    images: Annotated[list[UploadFile] | None, File()] = None,
    model: Short = "",
    max_turns: Short = "",
    timeout: Short = "",
    allowed_tools: Text = "",
    disallowed_tools: Text = "",
    append_system_prompt: Text = "",
) -> Response:
    parts = await _read_images(images or [])
    options = {
        "model": model,
        "maxTurns": max_turns,
        "timeout": timeout,
        "allowedTools": _tools(allowed_tools),
        "disallowedTools": _tools(disallowed_tools),
        "appendSystemPrompt": append_system_prompt,
    }
    request = _job_request(repository, prompt, options)

    def submit() -> Job:
        with services.audit(user, address, "job.create", request.repository) as audit:
            job = services.jobs.create(user, request, audit)
        if parts:
            with services.audit(user, address, "job.upload", job.id):
                services.jobs.add_images(job, parts)
            job = services.job_reader.visible(user, job.id)
        with services.audit(user, address, "job.start", job.id) as audit:
            services.jobs.start(job, audit)
        return job

    job = await anyio.to_thread.run_sync(submit)
    return RedirectResponse(f"/ui/jobs/{job.id}", status_code=303)


def job_context(job: Job, services: Services) -> dict[str, Any]:
    return {
        "job": job,
        "position": services.job_reader.position(job),
        "live": job.status in LIVE,
        "resources": _resources(job),
    }


def _resources(job: Job) -> dict[str, Any]:
    """CPU time and peak memory of the job's control group, over all its runs."""
    return {"cpu": job.cpu_seconds, "memory": job.memory_peak_bytes}


def _workspace(job: Job, services: Services) -> str:
    return str(services.workspaces.workspace_path(job.id))


def _transcript_page(job: Job, services: Services, after: int) -> dict[str, Any]:
    events = services.job_reader.events_page(job.id, after, TRANSCRIPT_PAGE)
    last = events[-1].seq if events else after
    return {
        "rows": transcript.rows(events, _workspace(job, services)),
        "after": last,
        "more": len(events) == TRANSCRIPT_PAGE,
        "live": job.status in LIVE,
    }


@router.get("/jobs/{job_id}")
def job_page(request: Request, job: PageJob, services: ServicesDep) -> Response:
    context = job_context(job, services) | {"transcript": _transcript_page(job, services, 0)}
    return page(request, "job.html", tab="transcript", **context)


@router.get("/jobs/{job_id}/header")
def job_header(request: Request, job: PageJob, services: ServicesDep) -> Response:
    """The job's status and figures again, while it may still change."""
    return page(request, "job_header.html", **job_context(job, services))


@router.get("/jobs/{job_id}/transcript")
def transcript_page(
    request: Request,
    job: PageJob,
    services: ServicesDep,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> Response:
    """The next page of the transcript, as the reader scrolls to it."""
    rows = _transcript_page(job, services, after)
    return page(request, "transcript_page.html", job=job, transcript=rows)


@router.get("/jobs/{job_id}/events")
async def job_events(
    job: PageJob,
    user: PageUser,
    services: ServicesDep,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    last_event_id: Annotated[int | None, Header(ge=0, le=2**62)] = None,
) -> Response:
    """The transcript's new rows as they are written, as Server-Sent Events of HTML
    (rendered and escaped here), until the job has ended."""
    template = TEMPLATES.get_template("transcript_rows.html")
    workspace = _workspace(job, services)

    async def stream() -> AsyncIterator[ServerSentEvent]:
        runs = services.job_reader.follow(job.id, last_event_id or after, user.name)
        async with aclosing(runs):
            async for events in runs:
                for event in events:
                    html = template.render(rows=transcript.rows([event], workspace))
                    if html.strip():
                        yield ServerSentEvent(data=html, event="rows", id=str(event.seq))
                del events, event  # before asking for the next run (jobs/feeds.py)
        yield ServerSentEvent(data="", event="end")

    return EventSourceResponse(stream(), ping=15)


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(
    job: FormJob, user: FormUser, services: ServicesDep, address: ClientAddress
) -> Response:
    with services.audit(user, address, "job.cancel", job.id):
        await services.jobs.cancel(job)
    return RedirectResponse(f"/ui/jobs/{job.id}", status_code=303)


@router.post("/jobs/{job_id}/resume")
def resume_job(
    job: FormJob, user: FormUser, services: ServicesDep, address: ClientAddress, prompt: Text
) -> Response:
    if not prompt.strip():
        raise BadRequest("the follow-up prompt is empty")
    with services.audit(user, address, "job.resume", job.id) as audit:
        services.jobs.resume(job, prompt, audit)
    return RedirectResponse(f"/ui/jobs/{job.id}", status_code=303)


@router.post("/jobs/{job_id}/delete")
async def delete_job(
    job: FormJob, user: FormUser, services: ServicesDep, address: ClientAddress
) -> Response:
    with services.audit(user, address, "job.delete", job.id):
        await services.jobs.delete(job)
    return RedirectResponse("/ui/", status_code=303)
