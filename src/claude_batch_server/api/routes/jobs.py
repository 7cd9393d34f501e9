import json
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from contextlib import aclosing
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, File, Header, Query, Response, UploadFile
from fastapi.responses import StreamingResponse
from pydantic import TypeAdapter
from sse_starlette import EventSourceResponse, ServerSentEvent

from claude_batch_server.api.deps import (
    ClientAddress,
    CurrentUser,
    ListingPagesDep,
    OwnedJob,
    Owner,
    ServicesDep,
)
from claude_batch_server.api.listings import PageKey
from claude_batch_server.api.schemas.jobs import (
    CreateJobRequest,
    DeliveryResponse,
    EventResponse,
    ImageResponse,
    JobPageResponse,
    JobResponse,
    ResumeJobRequest,
    StartResponse,
)
from claude_batch_server.errors import BadRequest
from claude_batch_server.jobs.events import PAGE_EVENTS
from claude_batch_server.jobs.images import MAX_IMAGE_BYTES
from claude_batch_server.jobs.reading import CURSOR_PATTERN, LISTED
from claude_batch_server.jobs.service import JobRequest
from claude_batch_server.jobs.status import JobStatus
from claude_batch_server.repositories.service import qualified
from claude_batch_server.store import reads
from claude_batch_server.store.tables import Job, JobEvent

router = APIRouter(prefix="/jobs", tags=["jobs"])
MAX_SEQ = 2**63 - 1  # the largest sequence number a database column holds


def job_fields(job: Mapping[Any, Any], position: int | None) -> dict[str, Any]:
    """The fields of a job's answer, from its row of LISTED columns."""
    return {
        "job_id": job["id"],
        "user": job["user"],
        "repository": job["repository"],
        "prompt": job["prompt"],
        "status": job["status"],
        "queue_position": position,
        "created_at": job["created_at"],
        "started_at": job["started_at"],
        "completed_at": job["completed_at"],
        "exit_code": job["exit_code"],
        "output": job["output"],
        "error": job["error"],
        "session_id": job["session_id"],
        "num_turns": job["num_turns"],
        "cost_usd": job["cost_usd"],
        "usage": {"input_tokens": job["input_tokens"], "output_tokens": job["output_tokens"]},
        "resources": {
            "cpu_seconds": job["cpu_seconds"],
            "memory_peak_bytes": job["memory_peak_bytes"],
        },
        "images": job["images"],
        "options": job["options"],
        "result": job["result"],
    }


def job_response(job: Job, position: int | None) -> JobResponse:
    row = {column.key: getattr(job, column.key) for column in LISTED}
    return JobResponse.model_validate(job_fields(row, position))


def event_response(event: JobEvent) -> EventResponse:
    return EventResponse(
        seq=event.seq, time=event.time, type=event.type, event=json.loads(event.data)
    )


# A followed job's events are shared by all its followers in this process (jobs/feeds.py):
# each is rendered once for them all, as its whole frame, and forgotten with the event.
_FRAMES: weakref.WeakKeyDictionary[JobEvent, bytes] = weakref.WeakKeyDictionary()
CHUNK_BYTES = 64 * 1024  # frames sent in one write, at most (unless one frame is larger)


def event_frame(event: JobEvent) -> bytes:
    frame = _FRAMES.get(event)
    if frame is None:
        data = event_response(event).model_dump_json(by_alias=True)
        frame = _FRAMES[event] = ServerSentEvent(data=data, id=str(event.seq)).encode()
    return frame


def chunks(events: list[JobEvent]) -> Iterator[bytes]:
    """The events' frames, joined into writes of about CHUNK_BYTES: a follower that lags
    catches up in few writes, and none holds much more than its page of events. A write
    returns once its bytes are buffered, the next waits for the client to take them: so a
    last write of CHUNK_BYTES or more is followed by an empty one, which returns once the
    run is written out. Only then is the next run asked for, for which the follower may
    wait long, holding little of this one (the server keeps what it wrote last, and a
    buffer of that size at most)."""
    frames: list[bytes] = []
    size = 0
    for event in events:
        frame = event_frame(event)
        frames.append(frame)
        size += len(frame)
        if size >= CHUNK_BYTES:
            yield b"".join(frames)
            frames, size = [], 0
    yield b"".join(frames)


_EVENT_LIST = TypeAdapter(list[EventResponse])


async def json_page(pages: AsyncGenerator[list[JobEvent], None]) -> AsyncIterator[bytes]:
    """The page of events as a JSON list, written out before the page's permit is given
    back (the empty write returns once it is, see `chunks`): however many a user asks for
    at once, they hold a few pages (jobs/feeds.py)."""
    async with aclosing(pages):
        async for events in pages:
            yield _EVENT_LIST.dump_json([event_response(event) for event in events], by_alias=True)
            yield b""


@router.post("", status_code=201, response_model=JobResponse, responses={404: {}, 409: {}})
def create_job(
    body: CreateJobRequest,
    user: CurrentUser,
    services: ServicesDep,
    address: ClientAddress,
    owner: Owner = None,
) -> JobResponse:
    """A job on the caller's repository `repository`; an admin names another `owner`'s."""
    options = body.options.model_dump(by_alias=True, exclude_none=True)
    request = JobRequest(body.prompt, body.repository, options, body.images, owner)
    target = qualified(owner or user.name, body.repository)
    with services.audit(user, address, "job.create", target) as audit:
        job = services.jobs.create(user, request, audit)
    return job_response(job, None)  # created: not in the queue yet


@router.get("", response_model=JobPageResponse)
async def list_jobs(
    user: CurrentUser,
    services: ServicesDep,
    pages: ListingPagesDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN)] = None,
    owner: Annotated[str | None, Query(alias="user", max_length=255)] = None,
) -> Response:
    # the count first: the page read after it is at least as current (api/listings.py)
    listed = await reads.read(services.job_reader.version, user, owner)

    async def render() -> tuple[bytes, bool]:
        """The page, and whether it may be kept: not with queued jobs, whose positions
        move with other users' jobs."""
        listing = await reads.read_listing(
            services.job_reader.listing, user, status, limit, cursor, owner
        )
        jobs = [job_fields(row, position) for row, position in listing.jobs]
        answer = JobPageResponse.model_validate({"jobs": jobs, "next_cursor": listing.next_cursor})
        queued = any(position is not None for _, position in listing.jobs)
        return answer.model_dump_json(by_alias=True).encode(), not queued

    if listed is None:  # every user's jobs: no one count covers them
        page, _ = await render()
    else:
        key = PageKey(listed.owner, status, limit, cursor)
        page = await pages.page(key, listed.version, render)
    return Response(page, media_type="application/json")


@router.get("/{job_id}", response_model=JobResponse, responses={404: {}})
async def get_job(job: OwnedJob, services: ServicesDep) -> JobResponse:
    if job.status != JobStatus.QUEUED:  # only a queued job has a position to read
        return job_response(job, None)
    return job_response(job, await reads.read(services.job_reader.position, job))


@router.post("/{job_id}/images", status_code=201, response_model=list[ImageResponse])
async def upload_images(
    job: OwnedJob,
    user: CurrentUser,
    services: ServicesDep,
    address: ClientAddress,
    file: Annotated[list[UploadFile], File(description="one or more images", min_length=1)],
) -> list[ImageResponse]:
    parts = []
    for upload in file:
        data = await upload.read(MAX_IMAGE_BYTES + 1)
        if len(data) > MAX_IMAGE_BYTES:
            raise BadRequest(f"{upload.filename}: larger than 10 MiB")
        parts.append((upload.filename, data))
    with services.audit(user, address, "job.upload", job.id):
        saved = await anyio.to_thread.run_sync(services.jobs.add_images, job, parts)
    return [ImageResponse(name=name, size=size) for name, size in saved]


@router.post("/{job_id}/start", status_code=202, response_model=StartResponse, responses={409: {}})
def start_job(
    job: OwnedJob, user: CurrentUser, services: ServicesDep, address: ClientAddress
) -> StartResponse:
    with services.audit(user, address, "job.start", job.id) as audit:
        started, position = services.jobs.start(job, audit)
    return StartResponse(job_id=started.id, status=started.status, queue_position=position)


@router.post("/{job_id}/cancel", status_code=202, response_model=JobResponse, responses={409: {}})
async def cancel_job(
    job: OwnedJob, user: CurrentUser, services: ServicesDep, address: ClientAddress
) -> JobResponse:
    with services.audit(user, address, "job.cancel", job.id):
        cancelled = await services.jobs.cancel(job)
    return job_response(cancelled, None)  # cancelled: in no queue


@router.post("/{job_id}/resume", status_code=202, response_model=JobResponse, responses={409: {}})
def resume_job(
    body: ResumeJobRequest,
    job: OwnedJob,
    user: CurrentUser,
    services: ServicesDep,
    address: ClientAddress,
) -> JobResponse:
    with services.audit(user, address, "job.resume", job.id) as audit:
        resumed, position = services.jobs.resume(job, body.prompt, audit)
    return job_response(resumed, position)


@router.delete("/{job_id}", status_code=204)
async def delete_job(
    job: OwnedJob, user: CurrentUser, services: ServicesDep, address: ClientAddress
) -> Response:
    with services.audit(user, address, "job.delete", job.id):
        await services.jobs.delete(job)
    return Response(status_code=204)


@router.get(
    "/{job_id}/events",
    response_model=list[EventResponse],
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def job_events(
    job: OwnedJob,
    user: CurrentUser,
    services: ServicesDep,
    follow: bool = True,
    after: Annotated[int | None, Query(ge=0, le=MAX_SEQ)] = None,
    limit: Annotated[int, Query(ge=1, le=PAGE_EVENTS)] = PAGE_EVENTS,
    last_event_id: Annotated[int, Header(ge=0, le=MAX_SEQ)] = 0,
) -> Any:
    """Server-Sent Events (`id:` = sequence number; `Last-Event-ID` or `after` resumes),
    ending once the job has ended; with `follow=false`, one page as a JSON list: at most
    `limit` events after the sequence number `after`, fewer when they are large (ask again
    after the last one; an empty page is the end so far)."""
    start = after if after is not None else last_event_id
    if not follow:
        page = services.job_reader.events_page_to_send(job.id, start, limit, user.name)
        return StreamingResponse(json_page(page), media_type="application/json")

    async def stream() -> Any:
        async with aclosing(services.job_reader.follow(job.id, start, user.name)) as runs:
            async for events in runs:
                for chunk in chunks(events):
                    yield chunk
                del events  # before asking for the next run, which may be long in coming
        yield ServerSentEvent(data=json.dumps({"jobId": job.id}), event="end")

    return EventSourceResponse(stream(), ping=15)


@router.get(
    "/{job_id}/patch",
    response_class=Response,
    responses={200: {"content": {"application/mbox": {}}}, 404: {}, 409: {}},
)
def job_patch(job: OwnedJob, services: ServicesDep) -> Response:
    """The job's changes as one commit of its user (`git format-patch`), for `git am`."""
    return Response(services.results.patch(job), media_type="application/mbox")


@router.get("/{job_id}/deliveries", response_model=list[DeliveryResponse])
def job_deliveries(job: OwnedJob, services: ServicesDep) -> list[DeliveryResponse]:
    """Every attempt to deliver the job's webhooks, oldest first."""
    return [
        DeliveryResponse.model_validate(attempt, from_attributes=True)
        for attempt in services.results.deliveries(job)
    ]
