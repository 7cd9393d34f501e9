from pydantic import BaseModel


class Checks(BaseModel):
    database: str
    storage: str
    agent: str
    cluster: str | None = None  # with EXECUTOR=slurm: a node of the cluster takes jobs


class HealthResponse(BaseModel):
    status: str
    version: str
    checks: Checks
    cgroup: str  # v1, v2 or none: the control groups that jobs run in
