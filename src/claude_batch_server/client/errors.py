"""How the client fails: one line on stderr, and an exit code a script can test."""

from __future__ import annotations

COMPLETED = 0
NOT_COMPLETED = 1  # a job failed, timed out or was cancelled; or the server refused the request
USAGE = 2
UNREACHABLE = 3  # the server cannot be reached, or refuses the login or the token


class Failure(Exception):
    """An expected failure: `main()` prints its message as one line and exits with `code`."""

    def __init__(self, message: str, code: int = NOT_COMPLETED, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status  # the HTTP status, when the server answered


class Unreachable(Failure):
    """The server could not be reached or could not serve: worth a retry when following."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message, UNREACHABLE)
        self.reason = reason or message  # the cause alone, without the server's address
