"""Dependencies: the services of this app, and the caller (authenticated once, here)."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from claude_batch_server.auth.service import User
from claude_batch_server.errors import Unauthenticated
from claude_batch_server.logs import bind_user
from claude_batch_server.services import Services

_bearer = HTTPBearer(auto_error=False)


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


async def current_user(
    services: Annotated[Services, Depends(get_services)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthenticated("missing bearer token")
    user = await anyio.to_thread.run_sync(services.auth.authenticate, credentials.credentials)
    bind_user(user.name)
    return user


ServicesDep = Annotated[Services, Depends(get_services)]
CurrentUser = Annotated[User, Depends(current_user)]
ClientAddress = Annotated[str, Depends(client_address)]
