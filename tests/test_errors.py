"""The error hierarchy: free of HTTP, and mapped to it in one place at the edge."""

from __future__ import annotations

import subprocess
import sys

import anyio
import httpx
import pytest
from fastapi import FastAPI

from claude_batch_server import errors
from claude_batch_server.api.errors import install_handlers
from claude_batch_server.workspaces import WorkspaceError

RAISED = [
    (errors.BadRequest("bad name"), 400, {}),
    (errors.Unauthenticated("invalid credentials"), 401, {"www-authenticate": "Bearer"}),
    (errors.Forbidden("admins only"), 403, {}),
    (errors.NotFound("no such job"), 404, {}),
    (errors.Conflict("job is running"), 409, {}),
    (errors.TooLarge("download it instead"), 413, {}),
    (errors.UnsupportedMedia("not text"), 415, {}),
    (errors.RangeNotSatisfiable("range not satisfiable"), 416, {}),
    (errors.TooManyRequests("slow down", retry_after=7), 429, {"retry-after": "7"}),
    (errors.Unavailable("database is down"), 503, {}),
    (WorkspaceError("repository is missing"), 500, {}),
]


def answer(error: Exception) -> httpx.Response:
    app = FastAPI()
    install_handlers(app)

    @app.get("/")
    async def fail() -> None:
        raise error

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/")

    return anyio.run(get)


@pytest.mark.parametrize(("error", "status", "headers"), RAISED)
def test_each_error_answers_its_status_with_its_detail(
    error: errors.ServiceError, status: int, headers: dict[str, str]
) -> None:
    response = answer(error)
    assert response.status_code == status
    assert response.json() == {"detail": error.detail}
    for name, value in headers.items():
        assert response.headers[name] == value


def test_an_unexpected_error_says_nothing_of_itself() -> None:
    response = answer(RuntimeError("password=hunter2 in /srv/secret"))
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}


def test_the_services_import_no_web_framework() -> None:
    # errors, workspaces, auth, accounts and the audit trail are plain Python: only the
    # edge (api/, web/, app.py) knows HTTP
    modules = [
        "claude_batch_server.errors",
        "claude_batch_server.accounts",
        "claude_batch_server.audit",
        "claude_batch_server.workspaces.engine",
        "claude_batch_server.workspaces.probe",
        "claude_batch_server.auth.service",
        "claude_batch_server.auth.pam",
        "claude_batch_server.auth.shadow",
        "claude_batch_server.repositories.service",
    ]
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nprint('fastapi' in sys.modules)"
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert ran.stdout.strip() == "False"
