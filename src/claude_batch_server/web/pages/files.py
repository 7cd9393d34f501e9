"""A job's files (browse a folder, view a text file, download) and its diff."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

import anyio
from fastapi import Query, Request
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse

from claude_batch_server.api.deps import ServicesDep
from claude_batch_server.errors import TooLarge, UnsupportedMedia
from claude_batch_server.files.safe import parts_of
from claude_batch_server.web import diff
from claude_batch_server.web.deps import PageJob, page_router
from claude_batch_server.web.pages.jobs import job_context
from claude_batch_server.web.render import page

router = page_router()
PathQuery = Annotated[str, Query(max_length=4096)]


def _crumbs(path: str) -> list[tuple[str, str]]:
    """(name, path) of each folder above and including `path`."""
    parts = parts_of(path) if path else []
    return [(part, "/".join(parts[: n + 1])) for n, part in enumerate(parts)]


@router.get("/jobs/{job_id}/files")
def files_page(
    request: Request, job: PageJob, services: ServicesDep, path: PathQuery = ""
) -> Response:
    entries = services.files.list(job, path)
    context = job_context(job, services)
    return page(
        request, "files.html", tab="files", path=path, crumbs=_crumbs(path), entries=entries,
        **context,
    )  # fmt: skip


@router.get("/jobs/{job_id}/files/view")
def file_page(request: Request, job: PageJob, services: ServicesDep, path: PathQuery) -> Response:
    text, problem = None, None
    try:
        text, _ = services.files.content(job, path)
    except (UnsupportedMedia, TooLarge) as error:
        problem = error.detail  # the page offers the download instead
    context = job_context(job, services)
    return page(
        request, "file.html", tab="files", path=path, crumbs=_crumbs(path),
        lines=text.splitlines() if text is not None else None, problem=problem, **context,
    )  # fmt: skip


def _attachment(name: str) -> str:
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in name
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


@router.get("/jobs/{job_id}/files/download")
async def download(job: PageJob, services: ServicesDep, path: PathQuery) -> Response:
    """Always an attachment of no type the browser would run: bytes, never a page."""
    opened = await anyio.to_thread.run_sync(services.files.open, job, path)
    headers = {
        "Content-Length": str(opened.size),
        "Content-Disposition": _attachment(opened.name),
        "Content-Security-Policy": "sandbox",
    }
    return StreamingResponse(
        opened.chunks(0, opened.size - 1),
        headers=headers,
        media_type="application/octet-stream",
        background=BackgroundTask(opened.close),
    )


@router.get("/jobs/{job_id}/diff")
async def diff_page(request: Request, job: PageJob, services: ServicesDep) -> Response:
    parsed = diff.parse(await services.files.diff(job))
    return page(request, "diff.html", tab="diff", diff=parsed, **job_context(job, services))


@router.get("/jobs/{job_id}/diff/download")
async def diff_download(job: PageJob, services: ServicesDep) -> Response:
    headers = {
        "Content-Disposition": _attachment(f"{job.id}.diff"),
        "Content-Security-Policy": "sandbox",
    }
    return Response(await services.files.diff(job), media_type="text/x-diff", headers=headers)
