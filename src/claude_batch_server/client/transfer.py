"""Downloading a job's file: streamed to disk with a progress bar, complete or not at all."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path, PurePosixPath

import httpx
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from claude_batch_server.client.errors import USAGE, Failure
from claude_batch_server.client.http import Api
from claude_batch_server.client.output import Output

CHUNK = 64 * 1024


def target(path: str, option: Path | None) -> Path | None:
    """Where the file goes: -o FILE, into -o DIR, or its own name here; None is stdout."""
    name = PurePosixPath(path).name or "download"
    if option is None:
        return Path(name)
    if str(option) == "-":
        return None
    return option / name if option.is_dir() else option


def download(api: Api, job_id: str, path: str, dest: Path | None, output: Output) -> int:
    """Returns the number of bytes written."""
    with api.stream(f"/jobs/{job_id}/files/download", params={"path": path}) as response:
        if dest is None:
            return _to_stdout(response)
        return _to_file(response, dest, output)


def _to_stdout(response: httpx.Response) -> int:
    written = 0
    for chunk in response.iter_bytes(CHUNK):
        sys.stdout.buffer.write(chunk)
        written += len(chunk)
    sys.stdout.buffer.flush()
    return written


def _to_file(response: httpx.Response, dest: Path, output: Output) -> int:
    """Written under a hidden name first: a broken download never takes the real name."""
    partial = dest.with_name(f".{dest.name}.part")
    try:
        file = partial.open("wb")
    except OSError as error:
        raise Failure(f"cannot write {dest}: {error.strerror}", USAGE) from None
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=output.errors,
        transient=True,
        disable=output.json or not output.errors.is_terminal,
    )
    total = int(response.headers.get("Content-Length", 0)) or None
    try:
        with progress, file:
            task = progress.add_task(dest.name, total=total)
            for chunk in response.iter_bytes(CHUNK):
                file.write(chunk)
                progress.advance(task, len(chunk))
            written = file.tell()
        partial.replace(dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return written
