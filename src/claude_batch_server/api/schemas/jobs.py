from datetime import datetime
from typing import Annotated, Any

from pydantic import ConfigDict, Field

from claude_batch_server.api.schemas.base import ApiModel
from claude_batch_server.repositories.validation import NAME_PATTERN

MAX_PROMPT = 512 * 1024  # characters; a longer prompt is refused with 422

ToolName = Annotated[
    str, Field(max_length=200, pattern=r"^[A-Za-z_][A-Za-z0-9_.*-]*(\([^()\n\r,]*\))?$")
]


class JobOptions(ApiModel):
    model_config = ConfigDict(extra="forbid")

    timeout: int | None = Field(None, ge=1, le=366 * 24 * 3600, description="seconds")
    model: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@\[\]-]{0,127}$")
    max_turns: int | None = Field(None, ge=1, le=10_000)
    allowed_tools: list[ToolName] | None = Field(None, max_length=100)
    disallowed_tools: list[ToolName] | None = Field(None, max_length=100)
    append_system_prompt: str | None = Field(None, max_length=100_000)
    branch: bool | Annotated[str, Field(min_length=1, max_length=255)] | None = Field(
        None,
        description="push the completed job's changes as this branch (true: claude-batch/<jobId>)",
    )
    webhook: str | None = Field(
        None, max_length=2048, description="a URL this job's end is POSTed to"
    )


class CreateJobRequest(ApiModel):
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT)
    repository: str = Field(pattern=NAME_PATTERN)  # the caller's, or ?owner='s
    images: list[Annotated[str, Field(max_length=255)]] = Field([], max_length=20)
    options: JobOptions = Field(default_factory=JobOptions)


class ResumeJobRequest(ApiModel):
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT)


class Usage(ApiModel):
    input_tokens: int
    output_tokens: int


class Resources(ApiModel):
    """Measured from the job's control group, all its processes together: CPU time added
    up over its runs, the highest peak of memory of one run."""

    cpu_seconds: float
    memory_peak_bytes: int


class JobResult(ApiModel):
    """The branch push of `options.branch`: neither `pushed` nor `error` while under way."""

    branch: str
    commit: str | None
    pushed: bool
    error: str | None
    pull_request_url: str | None = Field(
        None, description="opens a pull (GitHub) or merge (GitLab) request for the branch"
    )


class JobResponse(ApiModel):
    job_id: str
    user: str
    repository: str
    prompt: str
    status: str
    queue_position: int | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    exit_code: int | None
    output: str | None
    error: str | None
    session_id: str | None
    num_turns: int
    cost_usd: float
    usage: Usage
    resources: Resources
    images: list[str]
    options: dict[str, Any]
    result: JobResult | None = None


class JobPageResponse(ApiModel):
    jobs: list[JobResponse]
    next_cursor: str | None


class StartResponse(ApiModel):
    job_id: str
    status: str
    queue_position: int | None


class ImageResponse(ApiModel):
    name: str
    size: int


class EventResponse(ApiModel):
    seq: int
    time: datetime
    type: str
    event: dict[str, Any]


class DeliveryResponse(ApiModel):
    time: datetime
    url: str
    status: int | None
    attempt: int
    error: str | None
