"""Logouts as every process sees them: at once in the process that took it, within one
dispatch tick in every other process sharing the database, and from the database itself
whenever the copy in memory cannot tell."""

from __future__ import annotations

from datetime import timedelta

import pytest

from claude_batch_server.auth import tokens
from claude_batch_server.auth.tokens import Claims, TokenService
from claude_batch_server.jobs.dispatcher import TICK
from claude_batch_server.store.db import Database
from tests.conftest import TEST_JWT_KEY
from tests.support.postgres import PostgresCluster
from tests.support.server import LiveServer, ServerFactory, wait_for
from tests.support.users import UserFactory


def me(server: LiveServer, token: str) -> int:
    with server.client(token) as client:
        return client.get("/auth/me").status_code


@pytest.mark.postgres
def test_a_logout_is_refused_at_once_here_and_within_a_tick_by_another_server(
    users: UserFactory, server_factory: ServerFactory, postgres: PostgresCluster
) -> None:
    url = postgres.create_database()
    here, there = server_factory(DATABASE_URL=url), server_factory(DATABASE_URL=url)
    user = users.create()
    token, other = here.login(user.name, user.password), here.login(user.name, user.password)
    assert me(there, token) == 200  # the other server takes it: not revoked, as far as it knows
    with here.client(token) as client:
        assert client.post("/auth/logout").json() == {"revoked": True}
    assert me(here, token) == 401  # at once, in the process that took the logout
    # the other process reads it from the database at its next tick
    wait_for(lambda: me(there, token) == 401, 2 * TICK + 5, "the other server to refuse it")
    assert me(here, other) == me(there, other) == 200  # only that token was logged out


def refused(service: TokenService, claims: Claims) -> bool:
    """As AuthService decides: from memory, else from the database."""
    revoked = service.revoked(claims)
    return service.revoked_in_database(claims) if revoked is None else revoked


def test_too_many_revocations_to_keep_are_asked_of_the_database(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokens, "MAX_CACHED", 3)
    service = TokenService(TEST_JWT_KEY, timedelta(hours=1), database, stale_after=60)
    claims = [service.decode(service.issue("u").token) for _ in range(5)]
    service.refresh()
    for logged_out in claims[:4]:
        service.revoke(logged_out)
    service.refresh()  # four, past the limit: none is kept
    assert service.revoked(claims[4]) is None  # so memory cannot tell
    assert [refused(service, c) for c in claims] == [True, True, True, True, False]


def test_a_copy_not_refreshed_in_time_is_not_trusted(database: Database) -> None:
    elsewhere = TokenService(TEST_JWT_KEY, timedelta(hours=1), database, stale_after=60)
    stale = TokenService(TEST_JWT_KEY, timedelta(hours=1), database, stale_after=0)
    claims = elsewhere.decode(elsewhere.issue("u").token)
    stale.refresh()
    elsewhere.revoke(claims)  # by another process, after this one's last refresh
    assert stale.revoked(claims) is None
    assert refused(stale, claims)
    elsewhere.refresh()  # the one that took the logout knew at once, and still does
    assert elsewhere.revoked(claims) is True
