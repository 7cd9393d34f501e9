from pydantic import BaseModel


class Checks(BaseModel):
    database: str
    storage: str
    agent: str


class HealthResponse(BaseModel):
    status: str
    version: str
    checks: Checks
    cgroup: str  # v1, v2 or none: the control groups that jobs run in
