"""Webhooks as the Standard Webhooks specification says: signed with its reference
implementation, sent with short timeouts, no redirect followed, retried on a schedule."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
from standardwebhooks import Webhook

from claude_batch_server.errors import BadRequest
from claude_batch_server.repositories.validation import redact

EVENT = "job.ended"
MAX_URL = 2048
# The specification's own schedule after the first attempt: 5 s, 5 min, 30 min, 2 h, 5 h,
# 10 h, 10 h; a delivery is given up some 27 hours after the job's end.
PAUSES = tuple(timedelta(seconds=s) for s in (5, 300, 1800, 7200, 18000, 36000, 36000))
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
DEADLINE = 20.0  # seconds for a whole attempt, however slowly a receiver answers
USER_AGENT = "claude-batch-server-webhooks"


def checked_url(url: str, allowed_hosts: list[str]) -> str:
    """A job's own webhook: http(s), to a host of WEBHOOK_ALLOWED_HOSTS; 400 otherwise."""
    if not allowed_hosts:
        raise BadRequest("per-job webhooks are off on this server (WEBHOOK_ALLOWED_HOSTS)")
    parts = _parts(url)
    if parts is None or parts.scheme not in {"http", "https"} or not parts.hostname:
        raise BadRequest("invalid webhook: use an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise BadRequest("invalid webhook: no credentials in the URL (deliveries are signed)")
    if parts.hostname.lower() not in {host.lower() for host in allowed_hosts}:
        raise BadRequest(f"webhook host {parts.hostname!r} is not in WEBHOOK_ALLOWED_HOSTS")
    return url


def allowed(url: str, allowed_hosts: list[str]) -> bool:
    try:
        checked_url(url, allowed_hosts)
    except BadRequest:
        return False
    return True


def _parts(url: str) -> Any:
    if len(url) > MAX_URL or any(c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in url):
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return None
    return parts


def shown_url(url: str) -> str:
    """The server-wide WEBHOOK_URL as users see it in their deliveries: its path and
    query may hold a token (many chat hooks do), so only the origin."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…"


def body_of(job: dict[str, Any], ended: datetime | None) -> str:
    when = (ended or datetime.now(UTC)).astimezone(UTC)
    return json.dumps({"type": EVENT, "timestamp": when.isoformat(), "data": job})


@dataclass(frozen=True)
class Outcome:
    status: int | None  # the HTTP status, if an answer came
    error: str | None  # why it failed; None when delivered

    @property
    def delivered(self) -> bool:
        return self.error is None


class Sender:
    def __init__(self, secret: str) -> None:
        self._signer = Webhook(secret)
        self._client = httpx.AsyncClient(
            timeout=TIMEOUT,
            follow_redirects=False,
            trust_env=False,  # no proxy, no ~/.netrc of the server's sent to a user's host
            headers={"User-Agent": USER_AGENT},
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def send(self, url: str, message_id: str, body: str) -> Outcome:
        now = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._signer.sign(message_id, now, body),
        }
        try:
            with anyio.fail_after(DEADLINE):
                async with self._client.stream(
                    "POST", url, content=body.encode(), headers=headers
                ) as response:
                    status = response.status_code  # the answer's body is never read
        except (httpx.TimeoutException, TimeoutError):
            return Outcome(None, "timed out")
        except httpx.HTTPError as error:
            return Outcome(None, redact(f"{type(error).__name__}: {error}")[:500])
        if 200 <= status < 300:
            return Outcome(status, None)
        if 300 <= status < 400:
            return Outcome(status, f"HTTP {status}: redirects are not followed")
        return Outcome(status, f"HTTP {status}")
