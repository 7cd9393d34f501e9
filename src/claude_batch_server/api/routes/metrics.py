import anyio
from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from claude_batch_server.api.deps import ServicesDep

router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(services: ServicesDep) -> Response:
    """Prometheus text: queue depth, running jobs, job outcomes and durations, workspace
    creation times, logins."""
    body = await anyio.to_thread.run_sync(services.metrics.render)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
