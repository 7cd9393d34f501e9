from fastapi import APIRouter

from claude_batch_server.api.deps import AdminUser, ServicesDep
from claude_batch_server.api.schemas.repositories import StorageResponse

router = APIRouter(prefix="/system", tags=["operations"])


@router.get("/storage", response_model=StorageResponse, responses={403: {}})
def storage(_: AdminUser, services: ServicesDep) -> StorageResponse:
    """The copy-on-write probe of DATA_DIR: what works there, and what is in use; the
    control groups and the sandbox that jobs run in, and where they run."""
    report = services.workspaces.report() | {
        "cgroup": services.containment.flavour.value,
        "sandbox": services.sandbox.describe(),
        "executor": services.settings.EXECUTOR.value,
    }
    return StorageResponse.model_validate(report)
