from datetime import datetime
from typing import Literal

from claude_batch_server.api.schemas.base import ApiModel


class FileEntry(ApiModel):
    name: str
    path: str
    type: Literal["file", "directory"]
    size: int
    modified: datetime


class FileContent(ApiModel):
    path: str
    content: str
    encoding: Literal["utf-8"]
    size: int
