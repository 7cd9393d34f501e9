"""X-Forwarded-For and X-Forwarded-Proto, believed from TRUSTED_PROXIES only (uvicorn's own
middleware, run here rather than by uvicorn), keeping the connection's own peer in the scope
as `socket_client`: the login throttle knows a caller on this host by the owner of that
socket (auth/callers.py), and a forwarded client by its address."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

SOCKET_CLIENT = "socket_client"


class ForwardedClient:
    def __init__(self, app: ASGIApp, trusted: list[str]) -> None:
        # an empty list trusts nobody, not even loopback, where every local user connects
        self._app = ProxyHeadersMiddleware(app, trusted_hosts=trusted)  # type: ignore[arg-type]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            scope[SOCKET_CLIENT] = scope.get("client")
        await self._app(scope, receive, send)  # type: ignore[arg-type]
