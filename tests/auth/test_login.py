"""Logging in over HTTP against the real server, with real OS users, on both backends."""

from __future__ import annotations

import time

import pytest

from tests.support.server import ServerFactory
from tests.support.users import UserFactory

BACKENDS = ["pam", "shadow"]
BAD_LOGIN = {"detail": "invalid username or password"}


def login(server, username: str, password: str):  # type: ignore[no-untyped-def]
    with server.client() as client:
        return client.post("/auth/login", json={"username": username, "password": password})


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", ["yescrypt", "sha512", "sha256", "md5", "bcrypt"])
def test_every_hash_method_logs_in(
    backend: str, method: str, users: UserFactory, server_factory: ServerFactory
) -> None:
    user = users.create(method=method)
    assert user.shadow_hash().startswith(
        {"yescrypt": "$y$", "sha512": "$6$", "sha256": "$5$", "md5": "$1$", "bcrypt": "$2b$"}[
            method
        ]
    )
    server = server_factory(AUTH_BACKEND=backend)

    response = login(server, user.name, user.password)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user"] == user.name
    with server.client(body["token"]) as client:
        me = client.get("/auth/me").json()
    assert me == {"user": user.name, "uid": user.uid, "groups": [user.name], "admin": False}


@pytest.mark.parametrize("backend", BACKENDS)
def test_refusals_all_look_alike(
    backend: str, users: UserFactory, server_factory: ServerFactory
) -> None:
    allowed_group = users.group()
    listed = users.create(groups=(allowed_group,))
    unlisted = users.create()
    system = users.create(system=True)
    locked, expired, inactive = users.create(), users.create(), users.create()
    users.lock(locked.name)
    users.expire(expired.name)
    users.make_inactive(inactive.name)
    server = server_factory(AUTH_BACKEND=backend, ALLOWED_GROUPS=allowed_group)

    refused = [
        ("root", "whatever"),
        ("no-such-user-here", "whatever"),
        (system.name, system.password),
        (locked.name, locked.password),
        (expired.name, expired.password),
        (inactive.name, inactive.password),
        (unlisted.name, unlisted.password),
        (listed.name, "wrong password"),
    ]
    for username, password in refused:
        response = login(server, username, password)
        assert (response.status_code, response.json()) == (401, BAD_LOGIN), username
    assert login(server, listed.name, listed.password).status_code == 200


def test_allowed_users_list(users: UserFactory, server_factory: ServerFactory) -> None:
    alice, bob = users.create(), users.create()
    server = server_factory(ALLOWED_USERS=f" {alice.name} ,other")
    assert login(server, alice.name, alice.password).status_code == 200
    assert login(server, bob.name, bob.password).status_code == 401


@pytest.mark.parametrize("backend", BACKENDS)
def test_unknown_user_and_wrong_password_take_about_as_long(
    backend: str, users: UserFactory, server_factory: ServerFactory
) -> None:
    server = server_factory(AUTH_BACKEND=backend)
    known = [users.create() for _ in range(3)]

    def timed(username: str) -> float:
        started = time.perf_counter()
        assert login(server, username, "not the password").status_code == 401
        return time.perf_counter() - started

    # the least of several tries: a busy machine only ever adds time to a try
    wrong = min(timed(user.name) for user in known + known)
    unknown = min(timed(f"nobody{i}x") for i in range(6))
    # A password check costs tens of milliseconds; the failure floor hides it.
    assert abs(wrong - unknown) < 0.1, (wrong, unknown)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hash_login_only_when_enabled(
    backend: str, users: UserFactory, server_factory: ServerFactory
) -> None:
    user = users.create(method="sha512")
    stored = user.shadow_hash()
    resalted = users.create(method="sha512")  # the same password would hash differently
    users.set_password(resalted.name, user.password, "sha512")

    off = server_factory(AUTH_BACKEND=backend)
    assert login(off, user.name, stored).status_code == 401
    off.stop()

    on = server_factory(AUTH_BACKEND=backend, ALLOW_HASH_LOGIN="true")
    assert login(on, user.name, stored).status_code == 200
    assert login(on, user.name, user.password).status_code == 200
    assert login(on, user.name, resalted.shadow_hash()).status_code == 401
    assert login(on, user.name, stored[:-1] + "x").status_code == 401


def test_hash_login_refuses_locked_accounts(
    users: UserFactory, server_factory: ServerFactory
) -> None:
    user = users.create()
    stored = user.shadow_hash()
    users.lock(user.name)
    server = server_factory(ALLOW_HASH_LOGIN="true")
    assert login(server, user.name, stored).status_code == 401
