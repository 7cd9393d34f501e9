"""The caller's repositories: list, register (the row shows progress until ready), pull,
remove."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import Form, Request
from starlette.background import BackgroundTask
from starlette.responses import RedirectResponse, Response

from claude_batch_server.api.deps import ClientAddress, ServicesDep
from claude_batch_server.repositories.service import RegisterRequest, RepoStatus, qualified
from claude_batch_server.store.tables import Repository
from claude_batch_server.web.deps import FormRepository, page_router
from claude_batch_server.web.render import page
from claude_batch_server.web.session import FormUser, PageUser

router = page_router()
Field = Annotated[str, Form(max_length=4096)]
HERE = "/ui/repositories"


def _rows_context(user: PageUser, services: ServicesDep) -> dict[str, Any]:
    repositories = services.repositories.all_visible(user)
    busy = any(repo.status == RepoStatus.CLONING for repo in repositories)
    return {"repositories": repositories, "live": busy}


def _target(repo: Repository) -> str:
    return qualified(repo.registered_by, repo.name)


@router.get("/repositories")
def repositories_page(request: Request, user: PageUser, services: ServicesDep) -> Response:
    return page(request, "repositories.html", **_rows_context(user, services))


@router.get("/repositories/rows")
def repositories_rows(request: Request, user: PageUser, services: ServicesDep) -> Response:
    """The rows again, while a clone is under way."""
    return page(request, "repositories_rows.html", **_rows_context(user, services))


@router.post("/repositories/register")
def register(
    user: FormUser,
    services: ServicesDep,
    address: ClientAddress,
    name: Field,
    git_url: Field,
    branch: Field = "",
    description: Field = "",
) -> Response:
    request = RegisterRequest(name, git_url, description, branch or None)
    with services.audit(user, address, "repository.register", qualified(user.name, name)):
        repo = services.repositories.register(user, request)
    clone = BackgroundTask(anyio.to_thread.run_sync, services.repositories.clone, repo.id)
    return RedirectResponse(HERE, status_code=303, background=clone)


@router.post("/repositories/{name}/pull")
def pull(
    repo: FormRepository, user: FormUser, services: ServicesDep, address: ClientAddress
) -> Response:
    with services.audit(user, address, "repository.pull", _target(repo)):
        services.repositories.start_pull(repo)
    task = BackgroundTask(anyio.to_thread.run_sync, services.repositories.pull, repo.id)
    return RedirectResponse(HERE, status_code=303, background=task)


@router.post("/repositories/{name}/remove")
def remove(
    repo: FormRepository, user: FormUser, services: ServicesDep, address: ClientAddress
) -> Response:
    with services.audit(user, address, "repository.remove", _target(repo)):
        services.repositories.remove(repo)
    return RedirectResponse(HERE, status_code=303)
