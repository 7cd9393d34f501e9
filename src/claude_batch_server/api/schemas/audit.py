from datetime import datetime

from claude_batch_server.api.schemas.base import ApiModel


class AuditEntry(ApiModel):
    time: datetime
    user: str
    address: str
    action: str
    target: str
    outcome: str
