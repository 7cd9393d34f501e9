from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from claude_batch_server.api.deps import AdminUser, ServicesDep
from claude_batch_server.api.schemas.audit import AuditEntry

router = APIRouter(tags=["operations"])


@router.get("/audit", response_model=list[AuditEntry], responses={403: {}})
def audit(
    _: AdminUser,
    services: ServicesDep,
    user: Annotated[str | None, Query(max_length=255)] = None,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[AuditEntry]:
    """Who did what, from where, and how it ended: newest first (ADMIN_GROUP only)."""
    records = services.auditor.recent(user=user, since=_in_utc(since), limit=limit)
    return [AuditEntry.model_validate(r, from_attributes=True) for r in records]


def _in_utc(moment: datetime | None) -> datetime | None:
    """`since` in UTC, a time without a zone taken as UTC; one that UTC cannot hold (in year
    1 or 9999 with an offset) as the first or last moment that it can."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        edge = datetime.min if moment.year == datetime.min.year else datetime.max
        return edge.replace(tzinfo=UTC)
