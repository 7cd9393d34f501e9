"""The pages' dependencies: the caller and the jobs and repositories they may see, checked
once here as api/deps.py does for the API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from claude_batch_server.api.deps import ServicesDep
from claude_batch_server.store.tables import Job, Repository
from claude_batch_server.web.render import PageRoute
from claude_batch_server.web.session import FormUser, PageUser


def page_router() -> APIRouter:
    """Pages live under /ui and stay out of the API's OpenAPI document."""
    return APIRouter(prefix="/ui", route_class=PageRoute, include_in_schema=False)


def page_job(job_id: str, user: PageUser, services: ServicesDep) -> Job:
    return services.job_reader.visible(user, job_id)


def form_job(job_id: str, user: FormUser, services: ServicesDep) -> Job:
    return services.job_reader.visible(user, job_id)


def form_repository(name: str, user: FormUser, services: ServicesDep) -> Repository:
    return services.repositories.visible(user, name)


PageJob = Annotated[Job, Depends(page_job)]
FormJob = Annotated[Job, Depends(form_job)]
FormRepository = Annotated[Repository, Depends(form_repository)]
