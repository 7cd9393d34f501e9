"""Templates, the headers every page carries, and errors shown as pages.

Jinja escapes everything it prints (autoescape is on for every template), and the
Content-Security-Policy lets no inline script, no inline style and nothing from another
origin run, so text an agent wrote stays text even where a template slipped.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from starlette.responses import RedirectResponse, Response

from claude_batch_server import __version__
from claude_batch_server.errors import BadRequest, ServiceError, TooManyRequests
from claude_batch_server.web.session import LOGIN_PATH, NotLoggedIn, clear_session

PACKAGE = Path(str(files("claude_batch_server.web")))
STATIC = PACKAGE / "static"

NOTHING = "\N{EN DASH}"  # shown for a value not there yet
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def _since(moment: datetime | None, until: datetime | None = None) -> str:
    """`3 s`, `4 min`, `2 h 5 min`, `3 d`: how long from `moment` to `until` (or now)."""
    if moment is None:
        return NOTHING
    seconds = int(((until or datetime.now(UTC)) - moment).total_seconds())
    if seconds < 60:
        return f"{max(seconds, 0)} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def _size(count: int | None) -> str:
    if count is None:
        return NOTHING
    units, value, unit = ("KiB", "MiB", "GiB", "TiB"), float(count), "B"
    for bigger in units:
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"


def _first_line(text: str | None, limit: int = 120) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _query(**params: object) -> str:
    """`?a=1&b=2` of the parameters that have a value."""
    kept = {k: str(v) for k, v in params.items() if v not in (None, "")}
    return "?" + urlencode(kept) if kept else ""


def _build() -> Jinja2Templates:
    env = Environment(loader=FileSystemLoader(PACKAGE / "templates"), autoescape=True)
    env.filters.update(
        since=_since,
        size=_size,
        first_line=_first_line,
        money=lambda usd: f"${usd or 0:.4f}",
        number=lambda n: f"{n or 0:,}",
        when=lambda t: t.strftime("%Y-%m-%d %H:%M:%S UTC") if t else NOTHING,
        path=lambda p: quote(p, safe=""),
    )
    env.globals.update(query=_query, version=__version__)
    return Jinja2Templates(env=env)


TEMPLATES = _build()


def page(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
    context.setdefault("user", getattr(request.state, "user", None))
    context.setdefault("csrf", getattr(request.state, "csrf", ""))
    return TEMPLATES.TemplateResponse(request, name, context, status_code=status_code)


def error_page(request: Request, error: ServiceError) -> Response:
    response = page(
        request, "error.html", error.status_code, status=error.status_code, detail=error.detail
    )
    if isinstance(error, TooManyRequests):
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def _login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    response = RedirectResponse(f"{LOGIN_PATH}{_query(next=target)}", status_code=303)
    clear_session(response, request)
    return response


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class PageRoute(APIRoute):
    """A page: errors become pages (a lost session, the login page), and every answer
    carries the security headers."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                response = await handler(request)
            except NotLoggedIn:
                response = _login_redirect(request)
            except ServiceError as error:
                response = error_page(request, error)
            except RequestValidationError as error:
                problems = "; ".join(str(e.get("msg", "invalid")) for e in error.errors())
                response = error_page(request, BadRequest(f"invalid request: {problems}"))
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return route
