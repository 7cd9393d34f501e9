"""The HTTP API over httpx: every failure becomes a `Failure` with one readable line."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import httpx

from claude_batch_server.client.errors import NOT_COMPLETED, UNREACHABLE, Failure, Unreachable

TIMEOUT = httpx.Timeout(30.0, connect=10.0)
# The server pings an open event stream every 15 s: a minute of silence is a dead connection.
STREAM_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


def _user_agent() -> str:
    try:
        return f"claude-batch/{version('claude-batch-server')}"
    except PackageNotFoundError:
        return "claude-batch"


class Api:
    """One server, optionally with a bearer token."""

    def __init__(self, server: str, token: str | None = None) -> None:
        self.server = server
        self.token = token
        headers = {"User-Agent": _user_agent()}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(base_url=server, headers=headers, timeout=TIMEOUT)

    def clone(self) -> Api:
        """Another connection to the same server, for another thread."""
        return Api(self.server, self.token)

    def close(self) -> None:
        self._client.close()

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.RequestError as error:
            raise self._unreachable(error) from None
        self._check(response)
        return response

    def get(self, path: str, /, **params: Any) -> Any:
        return self.call("GET", path, params=params or None).json()

    def post(self, path: str, body: Any = None, *, params: Any = None) -> Any:
        response = self.call("POST", path, json=body, params=params)
        return response.json() if response.content else None

    def delete(self, path: str, *, params: Any = None) -> None:
        self.call("DELETE", path, params=params)

    @contextmanager
    def stream(
        self, path: str, *, params: Any = None, headers: Any = None, timeout: Any = STREAM_TIMEOUT
    ) -> Iterator[httpx.Response]:
        """A streamed GET; transport errors while reading it also become `Unreachable`."""
        try:
            with self._client.stream(
                "GET", path, params=params, headers=headers, timeout=timeout
            ) as response:
                if response.is_error:
                    response.read()
                    self._check(response)
                yield response
        except httpx.RequestError as error:
            raise self._unreachable(error) from None

    def _unreachable(self, error: httpx.RequestError) -> Unreachable:
        reason = str(error) or type(error).__name__
        return Unreachable(f"cannot reach the server at {self.server}: {reason}", reason)

    def _check(self, response: httpx.Response) -> None:
        if response.is_success:
            return
        status = response.status_code
        detail = _detail(response)
        if status == 401 and self.token:
            raise Failure(
                f"the server refused the login ({detail}): run `claude-batch login`",
                UNREACHABLE,
                status,
            )
        if status == 429:
            wait = response.headers.get("Retry-After")
            raise Failure(f"{detail} (retry in {wait} s)" if wait else detail, UNREACHABLE, status)
        if status >= 500:
            raise Unreachable(f"the server failed: {detail} (HTTP {status})")
        raise Failure(detail, UNREACHABLE if status == 401 else NOT_COMPLETED, status)


def _detail(response: httpx.Response) -> str:
    """The server's `{"detail": ...}`, or whatever it sent, on one line."""
    try:
        body = response.json()
        text = str(body["detail"]) if isinstance(body, dict) and "detail" in body else str(body)
    except ValueError:
        text = response.text.strip() or response.reason_phrase
    line = " ".join(text.split())
    return line[:300] or f"HTTP {response.status_code}"
