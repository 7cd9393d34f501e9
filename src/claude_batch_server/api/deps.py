"""Dependencies: the services of this app, its kept listing pages, and the caller
(authenticated once, here)."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from claude_batch_server.api.listings import ListingPages
from claude_batch_server.api.proxy import SOCKET_CLIENT
from claude_batch_server.auth.callers import Caller, identify
from claude_batch_server.auth.service import User
from claude_batch_server.errors import Forbidden, Unauthenticated
from claude_batch_server.logs import bind_caller, bind_user
from claude_batch_server.services import Services
from claude_batch_server.store import reads
from claude_batch_server.store.tables import Job, Repository

_bearer = HTTPBearer(auto_error=False)


# Dependencies are coroutines: FastAPI runs a plain function in a worker thread, and that
# hand-off costs more than the work. Those that read the database hand that read alone over.


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_listing_pages(request: Request) -> ListingPages:
    pages: ListingPages = request.app.state.listing_pages
    return pages


async def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


async def login_caller(request: Request) -> Caller:
    """Who is logging in, for the throttle: a local user by its uid (auth/callers.py)."""
    ends = (
        request.scope.get(SOCKET_CLIENT),
        request.scope.get("client"),
        request.scope.get("server"),
    )
    caller = await anyio.to_thread.run_sync(identify, *ends)
    bind_caller(caller.key)
    return caller


async def current_user(
    services: Annotated[Services, Depends(get_services)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthenticated("missing bearer token")
    user = await services.auth.authenticate(credentials.credentials)
    bind_user(user.name)
    return user


ServicesDep = Annotated[Services, Depends(get_services)]
ListingPagesDep = Annotated[ListingPages, Depends(get_listing_pages)]
CurrentUser = Annotated[User, Depends(current_user)]
ClientAddress = Annotated[str, Depends(client_address)]
LoginCaller = Annotated[Caller, Depends(login_caller)]


async def admin_user(user: CurrentUser) -> User:
    if not user.admin:
        raise Forbidden("this route is for members of ADMIN_GROUP")
    return user


OWNER_DESCRIPTION = "Whose repository (admins only; default: the caller's own)."
Owner = Annotated[
    str | None,
    Query(max_length=255, pattern=r"^[^\x00-\x1f\x7f]*$", description=OWNER_DESCRIPTION),
]


async def owned_repository(
    name: str, user: CurrentUser, services: ServicesDep, owner: Owner = None
) -> Repository:
    """The caller's repository `name`, or for an admin `owner`'s: the one ownership check."""
    return await anyio.to_thread.run_sync(services.repositories.visible, user, name, owner)


async def owned_job(job_id: str, user: CurrentUser, services: ServicesDep) -> Job:
    """The job `job_id`, if the caller may see it: the one ownership check for jobs."""
    return await reads.read(services.job_reader.visible, user, job_id)


AdminUser = Annotated[User, Depends(admin_user)]
OwnedJob = Annotated[Job, Depends(owned_job)]
OwnedRepository = Annotated[Repository, Depends(owned_repository)]
