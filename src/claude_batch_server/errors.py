"""The error hierarchy. Services raise these and know nothing of HTTP; each class names the
status it stands for, and `api.errors` maps them to responses in one place (the dashboard,
`web.render`, shows them as pages).

ServiceError            500, the base: something we did not expect to fail
├── BadRequest          400, the request is malformed or names something invalid
├── Unauthenticated     401, no valid credentials (one body for every login failure)
│   └── web.session.NotLoggedIn     the dashboard sends the browser to its login page
├── Forbidden           403, the caller is known but may not do this
├── NotFound            404, does not exist, or the caller may not see it
├── Conflict            409, the resource is not in a state that allows this
├── TooLarge            413, more than the route hands out (a file to download instead)
├── UnsupportedMedia    415, the content is not of a kind this route serves
├── RangeNotSatisfiable 416, a byte range outside the file
├── TooManyRequests     429, slowed down; carries `retry_after` seconds
├── Unavailable         503, a dependency (database, storage, agent) is down
└── workspaces.WorkspaceError   500, a workspace or stored tree could not be made or found

ConfigError, apart: the settings ask for what this server cannot do; it does not start.
"""

from __future__ import annotations


class ServiceError(Exception):
    status_code = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(ServiceError):
    status_code = 400


class Unauthenticated(ServiceError):
    status_code = 401


class Forbidden(ServiceError):
    status_code = 403


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    status_code = 409


class TooLarge(ServiceError):
    status_code = 413


class UnsupportedMedia(ServiceError):
    status_code = 415


class RangeNotSatisfiable(ServiceError):
    status_code = 416


class TooManyRequests(ServiceError):
    status_code = 429

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Unavailable(ServiceError):
    status_code = 503


class ConfigError(Exception):
    """Raised while the services are built, never while serving."""
