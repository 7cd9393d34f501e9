"""Repeated failures are slowed, then refused with 429 and Retry-After, also after a restart."""

from __future__ import annotations

import pytest

from tests.support.server import ServerFactory
from tests.support.users import UserFactory

USER_LIMIT = 5  # failures before a user name is refused


def attempt(server, username: str, password: str, address: str | None = None):  # type: ignore[no-untyped-def]
    with server.client() as client:
        return client.post("/auth/login", json={"username": username, "password": password})


def test_failures_for_one_user_end_in_429_that_survives_a_restart(
    users: UserFactory, server_factory: ServerFactory, database_url: str
) -> None:
    victim, bystander = users.create(), users.create()
    server = server_factory(DATABASE_URL=database_url)

    statuses = [attempt(server, victim.name, "guess").status_code for _ in range(USER_LIMIT)]
    assert statuses == [401] * USER_LIMIT

    refused = attempt(server, victim.name, victim.password)  # even the right password now
    assert refused.status_code == 429
    assert refused.json()["detail"]
    assert 0 < int(refused.headers["Retry-After"]) <= 60

    server.restart()
    assert attempt(server, victim.name, victim.password).status_code == 429
    assert attempt(server, bystander.name, bystander.password).status_code == 200


def test_failures_are_slowed_before_the_refusal(
    users: UserFactory, server_factory: ServerFactory
) -> None:
    user = users.create()
    server = server_factory()
    first = attempt(server, user.name, "guess").elapsed.total_seconds()
    for _ in range(2):
        attempt(server, user.name, "guess")
    fourth = attempt(server, user.name, "guess").elapsed.total_seconds()
    assert fourth > first + 0.5


@pytest.mark.parametrize("backend", ["pam", "shadow"])
def test_one_address_spraying_many_names_is_refused(
    backend: str, server_factory: ServerFactory
) -> None:
    server = server_factory(AUTH_BACKEND=backend)
    statuses = [attempt(server, f"spray{i}", "guess").status_code for i in range(21)]
    assert statuses[:20] == [401] * 20
    assert statuses[20] == 429


def test_a_success_clears_the_count(users: UserFactory, server_factory: ServerFactory) -> None:
    user = users.create()
    server = server_factory()
    for _ in range(USER_LIMIT - 1):
        assert attempt(server, user.name, "guess").status_code == 401
    assert attempt(server, user.name, user.password).status_code == 200
    assert attempt(server, user.name, "guess").status_code == 401
    assert attempt(server, user.name, user.password).status_code == 200
