"""The error hierarchy of `claude_batch_server.errors` mapped to HTTP, in one place, for
`create_app` to install: every error answers JSON `{"detail": ...}` with the status its
class names; a request that fails validation answers 400, and anything unexpected a bare
500 (logged, never shown)."""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from claude_batch_server.errors import ServiceError, TooManyRequests, Unauthenticated


def _headers(error: ServiceError) -> dict[str, str]:
    if isinstance(error, TooManyRequests):
        return {"Retry-After": str(error.retry_after)}
    if isinstance(error, Unauthenticated):
        return {"WWW-Authenticate": "Bearer"}
    return {}


async def _service_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ServiceError)
    return JSONResponse(
        {"detail": error.detail}, status_code=error.status_code, headers=_headers(error)
    )


async def _validation_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    # 400, as the contract asks for a bad repository name: one status for every bad request
    return JSONResponse({"detail": _describe(error)}, status_code=400)


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    headers = error.headers
    if error.status_code == 405:
        headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
    return JSONResponse(
        {"detail": str(error.detail)}, status_code=error.status_code, headers=headers
    )


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


def _describe(error: RequestValidationError) -> str:
    """One readable line per problem, e.g. `body.prompt: Field required`."""
    parts = []
    for problem in error.errors():
        where = ".".join(str(p) for p in problem.get("loc", ()))
        parts.append(f"{where}: {problem.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


async def _unexpected_error(_: Request, error: Exception) -> JSONResponse:
    structlog.get_logger("claude_batch_server").error(
        "unhandled error", exc_info=(type(error), error, error.__traceback__)
    )
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Exception, _unexpected_error)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
