"""Forged, expired, revoked tokens, and tokens of accounts deleted or locked since."""

from __future__ import annotations

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
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


def test_brute_force_from_one_address_is_slowed_then_refused(
    users: UserFactory, server_factory: ServerFactory, attacks: Attacks
) -> None:
    """Ten guesses at once: the name's first five failures are checked at once, then one
    guess at its turn and one waiting for the next; the rest get 429 (one address waits
    for one turn of a name at most). tests/security/test_login_throttle.py has the rest."""
    server = server_factory()
    victim = users.create()

    def guess(number: int) -> httpx.Response:
        with server.client() as client:
            body = {"username": victim.name, "password": f"guess{number}"}
            return client.post("/auth/login", json=body)

    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(guess, range(10)))
    attacks.tried(len(responses))
    codes = sorted(response.status_code for response in responses)
    assert set(codes) == {401, 429}
    assert codes.count(401) <= 5 + 2
    assert all(r.headers["retry-after"].isdigit() for r in responses if r.status_code == 429)
