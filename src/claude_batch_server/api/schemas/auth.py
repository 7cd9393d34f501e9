from datetime import datetime

from pydantic import BaseModel, Field

from claude_batch_server.api.schemas.base import ApiModel


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=255)
    password: str = Field(max_length=4096)


class LoginResponse(ApiModel):
    token: str
    user: str
    expires: datetime


class LogoutResponse(ApiModel):
    revoked: bool


class MeResponse(ApiModel):
    user: str
    uid: int
    groups: list[str]
    admin: bool
