"""Throttling: a caller that failed too often (a local user, whatever its address) is
refused with 429 and Retry-After, also after a restart; a name that failed too often is
slowed, never refused to a caller that did not fail. (tests/security/test_login_throttle.py
attacks it from many addresses and users.)"""

from __future__ import annotations

import httpx
import pytest

from tests.support.local_client import LocalClient, Request
from tests.support.server import LiveServer, ServerFactory
from tests.support.users import UserFactory

FREE = 5  # failures of a name checked at once, before its checks are serialised
PER_ADDRESS = 20  # failures from one address before it is refused


def attempt(
    server: LiveServer, username: str, password: str, address: str = "127.0.0.1"
) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(base_url=server.url, transport=transport, timeout=120) as client:
        return client.post("/auth/login", json={"username": username, "password": password})


def test_a_caller_that_failed_too_often_is_refused_also_after_a_restart(
    users: UserFactory, server_factory: ServerFactory, database_url: str
) -> None:
    victim, sprayer = users.create(), users.create()
    server = server_factory(DATABASE_URL=database_url)
    with LocalClient(server, sprayer) as spraying:
        sprays = (
            Request("/auth/login", json={"username": f"spray{i}", "password": "guess"})
            for i in range(PER_ADDRESS)
        )
        assert [answer.status_code for answer in spraying.send(*sprays)] == [401] * PER_ADDRESS

        refused = spraying.login("127.0.0.1", victim.name, victim.password)  # even this
        assert refused.status_code == 429
        assert refused.json()["detail"]
        assert 0 < int(refused.headers["Retry-After"]) <= 60

        server.restart()
        # from any address of the same user: one caller
        assert spraying.login("127.0.0.2", victim.name, victim.password).status_code == 429
    # the name itself is not locked: its owner, from the very address that failed, gets in
    with LocalClient(server, victim) as own:
        assert own.login("127.0.0.1", victim.name, victim.password).status_code == 200


def test_past_the_free_failures_a_name_is_slowed_not_refused(
    users: UserFactory, server_factory: ServerFactory
) -> None:
    user = users.create()
    server = server_factory()
    statuses = [attempt(server, user.name, "guess").status_code for _ in range(FREE + 2)]
    assert statuses == [401] * (FREE + 2)
    assert attempt(server, user.name, user.password).status_code == 200


@pytest.mark.parametrize("backend", ["pam", "shadow"])
def test_one_address_spraying_many_names_is_refused(
    backend: str, server_factory: ServerFactory
) -> None:
    server = server_factory(AUTH_BACKEND=backend)
    statuses = [attempt(server, f"spray{i}", "guess").status_code for i in range(21)]
    assert statuses[:20] == [401] * 20
    assert statuses[20] == 429


def test_a_success_gives_its_count_back(users: UserFactory, server_factory: ServerFactory) -> None:
    user = users.create()
    server = server_factory()
    for _ in range(FREE - 1):
        assert attempt(server, user.name, "guess").status_code == 401
    for _ in range(PER_ADDRESS):  # a script that logs in often is never throttled
        assert attempt(server, user.name, user.password).status_code == 200
    assert attempt(server, user.name, "guess").status_code == 401
    assert attempt(server, user.name, user.password).status_code == 200
