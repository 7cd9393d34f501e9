"""Bearer tokens: tampered, expired, revoked and revoked-then-restarted tokens are refused."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from tests.conftest import TEST_JWT_KEY
from tests.support.server import LiveServer, ServerFactory
from tests.support.users import OsUser, UserFactory


def me(server: LiveServer, token: str) -> int:
    with server.client(token) as client:
        return client.get("/auth/me").status_code


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.fixture
def user(users: UserFactory) -> OsUser:
    return users.create()


def claims_of(token: str) -> dict[str, object]:
    return jwt.decode(token, options={"verify_signature": False})


def test_tampered_tokens_are_refused(user: OsUser, server_factory: ServerFactory) -> None:
    server = server_factory()
    token = server.login(user.name, user.password)
    assert me(server, token) == 200
    claims = claims_of(token)
    header, payload, signature = token.split(".")

    alg_none = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{payload}."
    other_key = jwt.encode(claims, "another-key-" + "x" * 40, algorithm="HS256")
    changed_claim = f"{header}.{b64({**claims, 'sub': 'root'})}.{signature}"
    expired = jwt.encode({**claims, "exp": int(time.time()) - 10}, TEST_JWT_KEY, algorithm="HS256")
    no_jti = jwt.encode(
        {k: v for k, v in claims.items() if k != "jti"}, TEST_JWT_KEY, algorithm="HS256"
    )
    hs512 = jwt.encode(claims, TEST_JWT_KEY, algorithm="HS512")

    for bad in [alg_none, other_key, changed_claim, expired, no_jti, hs512, "garbage", ""]:
        assert me(server, bad) == 401, bad
    with server.client() as client:
        assert client.get("/auth/me").status_code == 401


def test_token_claims(user: OsUser, server_factory: ServerFactory) -> None:
    server = server_factory(JWT_EXPIRY_HOURS="2")
    token = server.login(user.name, user.password)
    claims = claims_of(token)
    assert set(claims) == {"sub", "exp", "iat", "jti"}
    assert claims["sub"] == user.name
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert int(claims["exp"]) - int(claims["iat"]) == 7200  # type: ignore[call-overload]


def test_logout_revokes_also_after_a_restart(
    user: OsUser, server_factory: ServerFactory, database_url: str
) -> None:
    server = server_factory(DATABASE_URL=database_url)
    token = server.login(user.name, user.password)
    other = server.login(user.name, user.password)
    with server.client(token) as client:
        assert client.post("/auth/logout").json() == {"revoked": True}
    assert me(server, token) == 401
    assert me(server, other) == 200

    server.restart()
    assert me(server, token) == 401
    assert me(server, other) == 200


def test_token_of_a_locked_or_deleted_account_is_refused(
    users: UserFactory, server_factory: ServerFactory
) -> None:
    locked, deleted = users.create(), users.create()
    server = server_factory()
    locked_token = server.login(locked.name, locked.password)
    deleted_token = server.login(deleted.name, deleted.password)
    assert me(server, locked_token) == me(server, deleted_token) == 200  # their facts are known
    users.lock(locked.name)
    users.delete(deleted.name)
    assert me(server, locked_token) == 401
    assert me(server, deleted_token) == 401
