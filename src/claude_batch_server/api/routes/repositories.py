import anyio
from fastapi import APIRouter, BackgroundTasks, Response

from claude_batch_server.api.deps import (
    ClientAddress,
    CurrentUser,
    OwnedRepository,
    Owner,
    ServicesDep,
)
from claude_batch_server.api.schemas.repositories import (
    RegisterRepositoryRequest,
    RepositoryResponse,
)
from claude_batch_server.repositories.service import RegisterRequest, qualified
from claude_batch_server.store.tables import Repository

router = APIRouter(prefix="/repositories", tags=["repositories"])


def _response(repo: object) -> RepositoryResponse:
    return RepositoryResponse.model_validate(repo, from_attributes=True)


def _target(repo: Repository) -> str:
    return qualified(repo.registered_by, repo.name)


@router.get(
    "", response_model=list[RepositoryResponse], response_model_by_alias=True, responses={404: {}}
)
def list_repositories(
    user: CurrentUser, services: ServicesDep, owner: Owner = None
) -> list[RepositoryResponse]:
    """The caller's repositories; an admin may name another `owner`, or `*` for all."""
    return [_response(repo) for repo in services.repositories.all_visible(user, owner)]


@router.get("/{name}", response_model=RepositoryResponse, responses={404: {}})
def get_repository(repo: OwnedRepository) -> RepositoryResponse:
    return _response(repo)


@router.post(
    "/register", status_code=202, response_model=RepositoryResponse, responses={400: {}, 409: {}}
)
def register_repository(
    body: RegisterRepositoryRequest,
    user: CurrentUser,
    services: ServicesDep,
    address: ClientAddress,
    background: BackgroundTasks,
) -> RepositoryResponse:
    request = RegisterRequest(body.name, body.git_url, body.description, body.branch)
    with services.audit(user, address, "repository.register", qualified(user.name, body.name)):
        repo = services.repositories.register(user, request)
    background.add_task(anyio.to_thread.run_sync, services.repositories.clone, repo.id)
    return _response(repo)


@router.post("/{name}/pull", status_code=202, response_model=RepositoryResponse)
def pull_repository(
    repo: OwnedRepository,
    user: CurrentUser,
    services: ServicesDep,
    address: ClientAddress,
    background: BackgroundTasks,
) -> RepositoryResponse:
    with services.audit(user, address, "repository.pull", _target(repo)):
        services.repositories.start_pull(repo)
    background.add_task(anyio.to_thread.run_sync, services.repositories.pull, repo.id)
    return _response(repo)


@router.delete("/{name}", status_code=204, responses={409: {}})
def delete_repository(
    repo: OwnedRepository, user: CurrentUser, services: ServicesDep, address: ClientAddress
) -> Response:
    with services.audit(user, address, "repository.remove", _target(repo)):
        services.repositories.remove(repo)
    return Response(status_code=204)
