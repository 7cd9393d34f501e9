from datetime import datetime

from pydantic import Field

from claude_batch_server.api.schemas.base import ApiModel


class RegisterRepositoryRequest(ApiModel):
    name: str = Field(max_length=200)
    git_url: str = Field(max_length=4096)
    description: str = Field("", max_length=10_000)
    branch: str | None = Field(None, max_length=255)


class RepositoryResponse(ApiModel):
    name: str
    git_url: str
    description: str
    status: str
    error: str | None
    branch: str | None
    commit: str | None
    registered_by: str
    registered_at: datetime
    last_pull: datetime | None
    size: int | None


class StorageAvailability(ApiModel):
    btrfs: bool
    reflink: bool
    overlay: bool
    copy_: bool = Field(alias="copy")


class StorageResponse(ApiModel):
    data_dir: str
    filesystem: str
    strategy: str
    available: StorageAvailability
