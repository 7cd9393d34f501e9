from datetime import datetime

from pydantic import Field

from claude_batch_server.api.schemas.base import ApiModel
from claude_batch_server.repositories.validation import (
    BRANCH_PATTERN,
    MAX_URL,
    NAME_PATTERN,
    URL_PATTERN,
)


class RegisterRepositoryRequest(ApiModel):
    name: str = Field(pattern=NAME_PATTERN)
    git_url: str = Field(max_length=MAX_URL, pattern=URL_PATTERN)
    description: str = Field("", max_length=10_000)
    branch: str | None = Field(None, pattern=BRANCH_PATTERN)


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
    cgroup: str  # v1, v2 or none: the control groups that jobs run in
    sandbox: str  # "landlock ABI N" or "off"
    quota: str  # per-job disk quotas: "xfs-project", "ext4-project" or "none: guard only"
    executor: str  # local or slurm: where jobs run (with slurm, `strategy` is never overlay)
