"""The dashboard's session: a cookie holding the same bearer token the API issues, and
the checks that keep other sites from acting with it.

Every state-changing form carries a token derived from the session (an HMAC of the
token's id under the server's key, so nothing is stored and logout retires it too), and
a POST from a browser must come from this origin (`Origin`, `Sec-Fetch-Site`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Form, Request
from starlette.responses import Response

from claude_batch_server.api.deps import ServicesDep
from claude_batch_server.auth.service import User
from claude_batch_server.auth.tokens import IssuedToken
from claude_batch_server.errors import Forbidden, Unauthenticated
from claude_batch_server.logs import bind_user

SESSION_COOKIE = "cbs_session"
LOGIN_COOKIE = "cbs_login"  # the login form's own token, before there is a session
LOGIN_PATH = "/ui/login"
MAX_TOKEN = 4096  # characters of a cookie we look at


class NotLoggedIn(Unauthenticated):
    """No session, or one that is no longer good: the page sends the browser to log in."""


def csrf_token(key: str, user: User) -> str:
    return hmac.new(key.encode(), f"csrf:{user.claims.jti}".encode(), hashlib.sha256).hexdigest()


def is_https(request: Request) -> bool:
    # behind a trusted proxy api/proxy.py has already taken the scheme from X-Forwarded-Proto
    return request.url.scheme == "https"


def set_session(response: Response, request: Request, issued: IssuedToken) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        issued.token,
        expires=issued.expires,
        path="/",
        secure=is_https(request),
        httponly=True,
        samesite="strict",
    )


def clear_session(response: Response, request: Request) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", secure=is_https(request), httponly=True, samesite="strict"
    )


def new_login_token() -> str:
    return secrets.token_urlsafe(32)


def set_login_token(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=3600,
        path=LOGIN_PATH,
        secure=is_https(request),
        httponly=True,
        samesite="strict",
    )


def _same(expected: str, given: str) -> bool:
    """In constant time; as bytes, for compare_digest refuses a str that is not ASCII."""
    return hmac.compare_digest(expected.encode(), given.encode())


def check_origin(request: Request) -> None:
    """A browser's POST must come from a page of this server."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise Forbidden("cross-site request refused")
    source = request.headers.get("origin") or request.headers.get("referer")
    if source is None:
        return  # not a browser that tells; the form token still has to match
    if urlsplit(source).netloc != request.headers.get("host", ""):
        raise Forbidden("cross-site request refused")


def check_login_form(request: Request, token: str) -> None:
    check_origin(request)
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not _same(expected, token):
        raise Forbidden("the login form has expired; reload the page")


async def page_user(request: Request, services: ServicesDep) -> User:
    """The caller of a page, from the session cookie."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token or len(token) > MAX_TOKEN:
        raise NotLoggedIn("not logged in")
    try:
        user = await services.auth.authenticate(token)
    except Unauthenticated as error:
        raise NotLoggedIn(error.detail) from error
    bind_user(user.name)
    request.state.user = user
    request.state.csrf = csrf_token(services.settings.jwt_key, user)
    return user


PageUser = Annotated[User, Depends(page_user)]


async def form_user(
    request: Request, user: PageUser, csrf: Annotated[str, Form(max_length=128)] = ""
) -> User:
    """The caller of a state-changing form: a session, this origin, the session's token."""
    check_origin(request)
    if not _same(csrf, request.state.csrf):
        raise Forbidden("the form has expired; reload the page")
    return user


FormUser = Annotated[User, Depends(form_user)]
