import mimetypes
from typing import Annotated
from urllib.parse import quote

import anyio
from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from claude_batch_server.api.deps import OwnedJob, ServicesDep
from claude_batch_server.api.schemas.files import FileContent, FileEntry
from claude_batch_server.files.service import byte_range

router = APIRouter(prefix="/jobs/{job_id}", tags=["files"])
PathQuery = Annotated[str, Query(max_length=4096, description="relative to the workspace")]


@router.get("/files", response_model=list[FileEntry], responses={400: {}, 404: {}})
def list_files(job: OwnedJob, services: ServicesDep, path: PathQuery = "") -> list[FileEntry]:
    return [
        FileEntry.model_validate(e, from_attributes=True) for e in services.files.list(job, path)
    ]


@router.get(
    "/files/download",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}, 206: {}, 404: {}, 416: {}},
)
async def download_file(
    job: OwnedJob,
    services: ServicesDep,
    path: PathQuery,
    range_header: Annotated[str | None, Header(alias="range")] = None,
) -> StreamingResponse:
    opened = await anyio.to_thread.run_sync(services.files.open, job, path)
    try:
        wanted = byte_range(range_header, opened.size)
    except Exception:
        opened.close()
        raise
    start, end = wanted or (0, opened.size - 1)
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(max(end - start + 1, 0)),
        "Content-Disposition": _attachment(opened.name),
        "X-Content-Type-Options": "nosniff",
    }
    if wanted:
        headers["Content-Range"] = f"bytes {start}-{end}/{opened.size}"
    media_type = mimetypes.guess_type(opened.name)[0] or "application/octet-stream"
    return StreamingResponse(
        opened.chunks(start, end),
        status_code=206 if wanted else 200,
        headers=headers,
        media_type=media_type,
        background=BackgroundTask(opened.close),
    )


@router.get("/files/content", response_model=FileContent, responses={404: {}, 413: {}, 415: {}})
def file_content(job: OwnedJob, services: ServicesDep, path: PathQuery) -> FileContent:
    text, size = services.files.content(job, path)
    return FileContent(path=path, content=text, encoding="utf-8", size=size)


@router.get("/diff", response_class=Response, responses={200: {"content": {"text/x-diff": {}}}})
async def job_diff(job: OwnedJob, services: ServicesDep) -> Response:
    return Response(await services.files.diff(job), media_type="text/x-diff")


def _attachment(name: str) -> str:
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
