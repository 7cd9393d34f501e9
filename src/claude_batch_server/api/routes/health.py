from fastapi import APIRouter
from fastapi.responses import JSONResponse

from claude_batch_server.api.deps import ServicesDep
from claude_batch_server.api.schemas.health import HealthResponse

router = APIRouter(tags=["operations"])


@router.get("/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
async def health(services: ServicesDep) -> JSONResponse:
    report = await services.health.report()
    body = HealthResponse.model_validate(report, from_attributes=True).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=200 if report.status == "ok" else 503)
