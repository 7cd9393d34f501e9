"""Forged, expired, revoked tokens, and tokens of accounts deleted or locked since."""

from __future__ import annotations

import base64
import json
import time

import jwt

from tests.conftest import TEST_JWT_KEY
from tests.security.conftest import Attacks
from tests.support.server import ServerFactory
from tests.support.users import UserFactory


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_no_bad_token_opens_any_route(
    users: UserFactory, server_factory: ServerFactory, attacks: Attacks
) -> None:
    server = server_factory()
    alice, locked, gone = users.create(), users.create(), users.create()
    token = server.login(alice.name, alice.password)
    revoked = server.login(alice.name, alice.password)
    locked_token = server.login(locked.name, locked.password)
    gone_token = server.login(gone.name, gone.password)
    with server.client(revoked) as client:
        client.post("/auth/logout")
    users.lock(locked.name)
    users.delete(gone.name)
    claims = jwt.decode(token, options={"verify_signature": False})
    header, payload, signature = token.split(".")
    bad_tokens = [
        f"{b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        f"{b64({'alg': 'none'})}.{b64({**claims, 'sub': 'root'})}.",
        jwt.encode(claims, "forged-" + "f" * 60, algorithm="HS256"),
        f"{header}.{b64({**claims, 'sub': locked.name})}.{signature}",
        jwt.encode({**claims, "exp": int(time.time()) - 1}, TEST_JWT_KEY, algorithm="HS256"),
        jwt.encode({**claims, "sub": "root"}, TEST_JWT_KEY, algorithm="HS512"),
        revoked,
        locked_token,
        gone_token,
        token + "x",
        "",
    ]
    routes = [
        ("GET", "/auth/me"),
        ("GET", "/jobs"),
        ("GET", "/repositories"),
        ("POST", "/jobs"),
        ("GET", "/system/storage"),
        ("POST", "/auth/logout"),
    ]
    for bad in bad_tokens:
        for method, path in routes:
            with server.client(bad) as client:
                response = client.request(method, path, json={})
            attacks.tried()
            assert response.status_code == 401, (bad, path, response.status_code)
    with server.client(token) as client:
        assert client.get("/auth/me").status_code == 200


def test_brute_force_ends_in_429(
    users: UserFactory, server_factory: ServerFactory, attacks: Attacks
) -> None:
    server = server_factory()
    victim = users.create()
    codes = []
    with server.client() as client:
        for guess in range(8):
            response = client.post(
                "/auth/login", json={"username": victim.name, "password": f"guess{guess}"}
            )
            attacks.tried()
            codes.append(response.status_code)
    assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}
    assert response.headers["retry-after"].isdigit()
