"""The application factory: `create_app(settings)` wires everything, nothing at import time."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI

from claude_batch_server import __version__, datadir, logs, maintenance, web
from claude_batch_server.api import errors
from claude_batch_server.api.limits import BodyLimitMiddleware
from claude_batch_server.api.listings import ListingPages
from claude_batch_server.api.proxy import ForwardedClient
from claude_batch_server.api.routes import (
    audit,
    auth,
    files,
    health,
    jobs,
    metrics,
    repositories,
    system,
)
from claude_batch_server.api.schemas.base import ERROR_RESPONSES
from claude_batch_server.jobs.dispatcher import TICK
from claude_batch_server.jobs.outcome import RunEnd
from claude_batch_server.services import build_services
from claude_batch_server.settings import Settings
from claude_batch_server.store import migrate
from claude_batch_server.store.db import Database
from claude_batch_server.store.tables import Job


def _webhook_job(job: Job) -> dict[str, Any]:
    """A job as a webhook carries it: the job object of the API."""
    return jobs.job_response(job, None).model_dump(mode="json", by_alias=True)


def create_app(settings: Settings) -> FastAPI:
    logs.configure(settings.LOG_FORMAT)
    datadir.prepare(settings.DATA_DIR, settings.DATABASE_URL)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = Database(settings.DATABASE_URL)
        await anyio.to_thread.run_sync(migrate.upgrade, database)
        services = build_services(settings, database)
        app.state.services = services
        await anyio.to_thread.run_sync(services.auth.refresh)  # the revocations, before any request
        await anyio.to_thread.run_sync(maintenance.recover, services)
        agent = await anyio.to_thread.run_sync(services.health.check_agent)
        if agent != "ok":  # the server serves, but every job would fail: say why, once
            logs.log.warning(
                "jobs cannot run the agent", command=settings.CLAUDE_COMMAND, check=agent
            )
        await services.executor.open()
        services.dispatcher.start()
        services.notifier.start()
        # what start-up made lives as long as the server: out of the collector's way, a full
        # collection under load took up to 155 ms, then 37 (bench/api.py, GET /jobs)
        gc.freeze()
        logs.log.info("started", data_dir=str(settings.DATA_DIR), auth=settings.AUTH_BACKEND.value)
        try:
            async with anyio.create_task_group() as background:
                background.start_soon(maintenance.restart_clones, services)
                background.start_soon(maintenance.retention_loop, services)
                background.start_soon(services.results.run, _webhook_job)
                background.start_soon(services.auth.keep_current, TICK)
                try:
                    yield
                finally:
                    background.cancel_scope.cancel()
        finally:
            await services.notifier.stop()
            await services.dispatcher.shutdown(RunEnd.SHUTDOWN)
            await services.executor.close()
            services.close()

    app = FastAPI(
        title="Claude Batch Server",
        version=__version__,
        docs_url="/swagger",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.listing_pages = ListingPages()
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(logs.RequestLogMiddleware)
    app.add_middleware(ForwardedClient, trusted=[str(n) for n in settings.TRUSTED_PROXIES])
    errors.install_handlers(app)
    for module in (auth, repositories, jobs, files, system, audit, health, metrics):
        app.include_router(module.router, responses=ERROR_RESPONSES)
    web.install(app)
    return app
