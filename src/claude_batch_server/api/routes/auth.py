from fastapi import APIRouter

from claude_batch_server.api.deps import ClientAddress, CurrentUser, LoginCaller, ServicesDep
from claude_batch_server.api.schemas.auth import (
    LoginRequest,
    LoginResponse,
    LogoutResponse,
    MeResponse,
)

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/login", response_model=LoginResponse, responses={401: {}, 429: {}})
async def login(body: LoginRequest, services: ServicesDep, caller: LoginCaller) -> LoginResponse:
    issued = await services.auth.login(body.username, body.password, caller)
    return LoginResponse(token=issued.token, user=body.username, expires=issued.expires)


@router.post("/logout", response_model=LogoutResponse)
async def logout(
    user: CurrentUser, services: ServicesDep, address: ClientAddress
) -> LogoutResponse:
    await services.auth.logout(user, address)
    return LogoutResponse(revoked=True)


@router.get("/me", response_model=MeResponse)
async def me(user: CurrentUser) -> MeResponse:
    account = user.account
    return MeResponse(
        user=account.name, uid=account.uid, groups=list(account.groups), admin=user.admin
    )
