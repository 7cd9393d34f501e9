"""`claude-batch-server serve`: read the settings, build the app, run uvicorn."""

from __future__ import annotations

import os
import sys
import threading

import typer
import uvicorn
from pydantic import ValidationError

from claude_batch_server.app import create_app
from claude_batch_server.settings import Settings
from claude_batch_server.workspaces import linux

MAX_REQUEST_HEAD = 64 * 1024  # bytes of a request's line and headers: 431 past it

cli = typer.Typer(add_completion=False, help="Claude Batch Server")


@cli.callback()
def _root() -> None:
    """Run Claude Code jobs for the users of this machine."""


@cli.command()
def serve() -> None:
    """Serve the API on HOST:PORT, configured by the environment (and `.env`)."""
    os.umask(0o077)  # first: whatever the server makes is its own unless it says otherwise
    _own_mounts()
    settings = _load_settings()
    uvicorn.run(
        create_app(settings),
        host=settings.HOST,
        port=settings.PORT,
        log_config=None,
        loop="asyncio",  # the standard loop: uvloop measured no faster here (bench/queue.py)
        # h11 bounds a request's line and headers; httptools kept any size a caller sent
        # (a header of 1 MB was read whole, and more would have been)
        http="h11",
        h11_max_incomplete_event_size=MAX_REQUEST_HEAD,
        timeout_graceful_shutdown=10,
        # the app believes X-Forwarded-For from TRUSTED_PROXIES itself (api/proxy.py);
        # uvicorn's default would believe loopback, where every local user connects
        proxy_headers=False,
    )


def _own_mounts() -> None:
    """The server's mounts (overlay workspaces) stay in a namespace of its own, which ends
    with its last process: a stopped or killed server leaves none in the host's table, and
    remounts what it needs at start. Its spawner, jobs and git inherit the namespace.
    Without CAP_SYS_ADMIN (a container) there is none, and no mount could be made anyway."""
    if threading.active_count() != 1:  # unshare moves the calling thread alone
        raise RuntimeError("the mount namespace must be made before any thread starts")
    try:
        linux.unshare_mounts()
    except PermissionError:
        return
    linux.receive_mounts_only()  # else our mounts would still reach the host's peers


def _load_settings() -> Settings:
    """The settings, or exit with one line per bad variable naming it."""
    try:
        return Settings()
    except ValidationError as error:
        for problem in error.errors():
            name = ".".join(str(part) for part in problem["loc"]) or "settings"
            message = problem["msg"].removeprefix("Value error, ")
            print(f"configuration error: {name}: {message}", file=sys.stderr)
        raise SystemExit(2) from None


def main() -> None:
    cli()
