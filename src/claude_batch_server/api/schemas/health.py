from pydantic import BaseModel


class Checks(BaseModel):
    database: str
    storage: str
    agent: str


class HealthResponse(BaseModel):
    status: str
    version: str
    checks: Checks
