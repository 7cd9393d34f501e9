"""The web dashboard under /ui: server-rendered pages (Jinja), a little htmx for the live
parts, assets shipped in this package. Pages call the same services as the API."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.responses import RedirectResponse

from claude_batch_server.web.pages import admin, auth, files, jobs, repositories
from claude_batch_server.web.render import STATIC


def install(app: FastAPI) -> None:
    """Mounts the pages, their assets, and `/` leading to them."""
    for module in (auth, jobs, files, repositories, admin):
        app.include_router(module.router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=307)
