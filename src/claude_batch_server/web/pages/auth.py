"""Logging in and out with the OS account, through the same AuthService as the API."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Request
from starlette.responses import RedirectResponse, Response

from claude_batch_server.api.deps import ClientAddress, LoginCaller, ServicesDep
from claude_batch_server.errors import TooManyRequests, Unauthenticated
from claude_batch_server.web.deps import page_router
from claude_batch_server.web.render import page
from claude_batch_server.web.session import (
    FormUser,
    check_login_form,
    clear_session,
    new_login_token,
    set_login_token,
    set_session,
)

router = page_router()
MAX_FIELD = 1024


def _next(target: str) -> str:
    """Only a page of ours, never another site: `/ui/…` without `//` or a backslash."""
    safe = target.startswith("/ui/") and "//" not in target and "\\" not in target
    return target if safe else "/ui/"


def _login_form(request: Request, status: int = 200, **context: object) -> Response:
    token = new_login_token()
    response = page(request, "login.html", status, user=None, login_token=token, **context)
    set_login_token(response, request, token)
    return response


@router.get("/login")
async def login_page(request: Request, next: str = "/ui/") -> Response:
    return _login_form(request, next=_next(next))


@router.post("/login")
async def login(
    request: Request,
    services: ServicesDep,
    caller: LoginCaller,
    username: Annotated[str, Form(max_length=MAX_FIELD)] = "",
    password: Annotated[str, Form(max_length=MAX_FIELD)] = "",
    login_token: Annotated[str, Form(max_length=128)] = "",
    next: Annotated[str, Form(max_length=MAX_FIELD)] = "/ui/",
) -> Response:
    check_login_form(request, login_token)
    try:
        issued = await services.auth.login(username, password, caller)
    except TooManyRequests as error:
        response = _login_form(request, 429, error=error.detail, username=username, next=next)
        response.headers["Retry-After"] = str(error.retry_after)
        return response
    except Unauthenticated as error:
        # the form again, with the API's one message; 200, as a page that works as meant
        return _login_form(request, error=error.detail, username=username, next=next)
    response = RedirectResponse(_next(next), status_code=303)
    set_session(response, request, issued)
    return response


@router.post("/logout")
async def logout(
    request: Request, user: FormUser, services: ServicesDep, address: ClientAddress
) -> Response:
    await services.auth.logout(user, address)
    response = RedirectResponse("/ui/login", status_code=303)
    clear_session(response, request)
    return response
