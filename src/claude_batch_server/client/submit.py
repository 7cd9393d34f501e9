"""Putting jobs on the server: create, upload the images, start."""

from __future__ import annotations

import contextlib
import mimetypes
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from claude_batch_server.client.errors import USAGE, Failure
from claude_batch_server.client.http import Api


@dataclass(frozen=True)
class JobSpec:
    repository: str
    prompt: str
    options: dict[str, Any] = field(default_factory=dict)
    images: tuple[Path, ...] = ()
    label: str = ""  # where it came from, for errors: "line 3"
    owner: str | None = None  # whose repository, when not the caller's (admins)

    def check(self) -> None:
        """Fails before anything reaches the server when a local part is missing."""
        where = f"{self.label}: " if self.label else ""
        if not self.prompt.strip():
            raise Failure(f"{where}the prompt is empty", USAGE)
        for image in self.images:
            if not image.is_file():
                raise Failure(f"{where}no such image file: {image}", USAGE)


def whose(owner: str | None) -> dict[str, str]:
    """The query that names another user's repository (admins only), if one is named."""
    return {"owner": owner} if owner else {}


def options(model: str | None, max_turns: int | None, timeout: int | None) -> dict[str, Any]:
    given = {"model": model, "maxTurns": max_turns, "timeout": timeout}
    return {key: value for key, value in given.items() if value is not None}


def create(api: Api, spec: JobSpec) -> str:
    """The job, created with its images uploaded, not yet started; returns its id."""
    job = api.post(
        "/jobs",
        {
            "repository": spec.repository,
            "prompt": spec.prompt,
            "options": spec.options,
            "images": [image.name for image in spec.images],
        },
        params=whose(spec.owner),
    )
    job_id = str(job["jobId"])
    if spec.images:
        try:
            upload(api, job_id, spec.images)
        except Failure:
            with contextlib.suppress(Failure):
                api.delete(f"/jobs/{job_id}")
            raise
    return job_id


def upload(api: Api, job_id: str, images: tuple[Path, ...]) -> None:
    with contextlib.ExitStack() as stack:
        try:
            parts = _parts(images, stack)
        except OSError as error:
            raise Failure(f"cannot read {error.filename}: {error.strerror}", USAGE) from None
        api.call("POST", f"/jobs/{job_id}/images", files=parts)


def _parts(images: tuple[Path, ...], stack: contextlib.ExitStack) -> list[Any]:
    return [
        (
            "file",
            (
                image.name,
                stack.enter_context(image.open("rb")),
                mimetypes.guess_type(image.name)[0] or "application/octet-stream",
            ),
        )
        for image in images
    ]


def start(api: Api, job_id: str) -> dict[str, Any]:
    started: dict[str, Any] = api.post(f"/jobs/{job_id}/start")
    return started


def submit(api: Api, specs: list[JobSpec]) -> list[dict[str, Any]]:
    """All jobs are created first and started only once every one is in place, so a bad
    line submits nothing; what was created before the failure is removed again."""
    for spec in specs:
        spec.check()
    created: list[str] = []
    try:
        for spec in specs:
            created.append(create(api, spec))
    except Failure as failure:
        for job_id in created:
            with contextlib.suppress(Failure):
                api.delete(f"/jobs/{job_id}")
        label = specs[len(created)].label
        message = f"{label}: {failure.message}" if label else failure.message
        raise Failure(message, failure.code) from None
    return [start(api, job_id) for job_id in created]
