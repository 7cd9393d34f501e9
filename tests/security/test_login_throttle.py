"""Attacks on the login throttle from several loopback addresses (the client socket is bound
to 127.0.0.x): a stranger cannot lock a user out, many addresses together guess one
password no faster than the documented rate, a forged X-Forwarded-For neither dodges the
per-address limit nor lands in the audit trail, and /metrics does not tell an unknown user
from a wrong password."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest

from tests.security.conftest import Attacks
from tests.support.server import LiveServer, ServerFactory, wait_for
from tests.support.users import OsUser, UserFactory

FREE = 5  # README "Logging in": failures of a name checked at once
INTERVAL = 5.0  # then one check of the name per this many seconds, whatever the address
PER_ADDRESS = 20  # failures from one address before it is refused


@contextmanager
def client_from(
    server: LiveServer, address: str, token: str | None = None
) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(
        base_url=server.url, transport=transport, headers=headers, timeout=120
    ) as client:
        yield client


def login(
    server: LiveServer, address: str, username: str, password: str, **headers: str
) -> httpx.Response:
    with client_from(server, address) as client:
        return client.post(
            "/auth/login", json={"username": username, "password": password}, headers=headers
        )


def at_once(
    calls: list[tuple[object, ...]], forged: list[str] | None = None
) -> list[httpx.Response]:
    """`login(*args)` for every args, all at the same time; each with its own forged
    X-Forwarded-For when `forged` lists them."""

    def one(index: int) -> httpx.Response:
        headers = {"X-Forwarded-For": forged[index]} if forged else {}
        return login(*calls[index], **headers)  # type: ignore[arg-type]

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(one, range(len(calls))))


def audit_of(server: LiveServer, admin_token: str, user: str) -> list[dict[str, str]]:
    with client_from(server, "127.0.0.1", admin_token) as client:
        response = client.get("/audit", params={"user": user, "limit": 10_000})
    assert response.status_code == 200, response.text
    entries: list[dict[str, str]] = response.json()
    return entries


def admin_of(server: LiveServer, users: UserFactory, group: str) -> str:
    admin = users.create(groups=(group,))
    return server.login(admin.name, admin.password)


def test_failures_from_one_address_never_lock_out_another(
    server_factory: ServerFactory, users: UserFactory, attacks: Attacks
) -> None:
    alice = users.create()
    server = server_factory()
    # what locked alice out for minutes before: a few failures, then many at once
    for _ in range(FREE):
        assert login(server, "127.0.0.1", alice.name, "guess").status_code == 401
    burst = at_once([(server, "127.0.0.1", alice.name, f"guess{i}") for i in range(30)])
    attacks.tried(FREE + len(burst))
    assert {response.status_code for response in burst} <= {401, 429}

    right = login(server, "127.0.0.2", alice.name, alice.password)
    assert right.status_code == 200, right.text
    assert right.json()["user"] == alice.name


def test_many_addresses_guess_one_name_at_the_documented_rate(
    server_factory: ServerFactory, users: UserFactory, attacks: Attacks
) -> None:
    admins = users.group()
    alice = users.create()
    server = server_factory(ADMIN_GROUP=admins)
    admin_token = admin_of(server, users, admins)
    addresses = [f"127.0.0.{i}" for i in range(3, 11)]

    started = time.monotonic()
    answers = at_once([(server, address, alice.name, f"guess-{address}") for address in addresses])
    elapsed = time.monotonic() - started
    attacks.tried(len(answers))
    assert {answer.status_code for answer in answers} <= {401, 429}

    trail = [entry for entry in audit_of(server, admin_token, alice.name)]
    checked = [entry for entry in trail if entry["outcome"] == "failed"]
    assert {entry["address"] for entry in checked} <= set(addresses)
    # every check happened while the test waited: the serialised ones are INTERVAL apart
    assert len(checked) <= FREE + int(elapsed // INTERVAL) + 1, (len(checked), elapsed)
    # ... and the guesses past the free ones were slowed, not refused
    assert len(checked) > FREE
    # meanwhile alice, from an address that never failed, still gets in
    assert login(server, "127.0.0.2", alice.name, alice.password).status_code == 200


def test_a_forged_x_forwarded_for_is_not_believed_from_loopback(
    server_factory: ServerFactory, users: UserFactory, attacks: Attacks
) -> None:
    admins = users.group()
    server = server_factory(ADMIN_GROUP=admins)
    admin_token = admin_of(server, users, admins)
    sprayed = [(server, "127.0.0.1", f"nobody{i}", "guess") for i in range(PER_ADDRESS + 5)]
    forged = [f"203.0.113.{i}" for i in range(len(sprayed))]
    answers = at_once(sprayed, forged)
    attacks.tried(len(answers))
    statuses = sorted(answer.status_code for answer in answers)
    # the forged addresses did not dodge the limit of the one real address
    assert statuses == [401] * PER_ADDRESS + [429] * 5
    assert all(0 < int(a.headers["Retry-After"]) <= 60 for a in answers if a.status_code == 429)
    names = [f"nobody{i}" for i in range(len(sprayed))]
    trail = [entry for name in names for entry in audit_of(server, admin_token, name)]
    assert len(trail) == len(sprayed)
    assert {entry["address"] for entry in trail} == {"127.0.0.1"}


def test_x_forwarded_for_is_believed_from_a_trusted_proxy(
    server_factory: ServerFactory, users: UserFactory
) -> None:
    admins = users.group()
    server = server_factory(ADMIN_GROUP=admins, TRUSTED_PROXIES="127.0.0.1")
    admin_token = admin_of(server, users, admins)
    forwarded = {"X-Forwarded-For": "198.51.100.7"}
    assert login(server, "127.0.0.1", "nobody", "guess", **forwarded).status_code == 401
    assert login(server, "127.0.0.2", "nobody", "guess", **forwarded).status_code == 401
    addresses = [entry["address"] for entry in audit_of(server, admin_token, "nobody")]
    assert sorted(addresses) == ["127.0.0.2", "198.51.100.7"]


def series(server: LiveServer) -> dict[str, float]:
    with client_from(server, "127.0.0.1") as client:
        text = client.get("/metrics").text
    pairs = re.findall(r"^([a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$", text, re.MULTILINE)
    return {name: float(value) for name, value in pairs}


def moved(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {
        name: value - before.get(name, 0.0)
        for name, value in after.items()
        if value != before.get(name, 0.0)
    }


def test_metrics_do_not_tell_an_unknown_user_from_a_wrong_password(
    server_factory: ServerFactory, users: UserFactory, attacks: Attacks
) -> None:
    alice: OsUser = users.create()
    locked = users.create()
    users.lock(locked.name)
    server = server_factory()
    changes = []
    for address, name in (
        ("127.0.0.3", "nosuchuser"),
        ("127.0.0.4", alice.name),
        ("127.0.0.5", locked.name),
    ):
        before = series(server)
        assert login(server, address, name, "guess").status_code == 401
        changes.append(moved(before, series(server)))
        attacks.tried()
    assert changes[0], "a failed login moves no public series"
    assert changes[0] == changes[1] == changes[2]
    assert "refused" not in str(changes)


@pytest.mark.xfail(
    strict=True,
    reason="open finding (h9): a name's queue past Limits.max_wait refuses everyone with 429;"
    " the right password waits behind the guesses or is refused; remove this mark when fixed",
)
def test_a_queue_of_guesses_from_many_addresses_does_not_lock_the_user_out(
    server_factory: ServerFactory, users: UserFactory, attacks: Attacks
) -> None:
    """One waiting guess per address is allowed; a dozen loopback addresses (any local user
    has 16 million) fill the name's queue past its longest wait, and then the right
    password from an address that never failed is refused like the guesses."""
    alice = users.create()
    server = server_factory()
    for _ in range(FREE):
        assert login(server, "127.0.0.3", alice.name, "guess").status_code == 401
    pool = ThreadPoolExecutor(max_workers=16)
    queued = [
        pool.submit(login, server, f"127.0.1.{i}", alice.name, f"guess{i}") for i in range(1, 16)
    ]
    probes = iter(range(1, 250))

    def full() -> bool:  # a fresh address is turned away: the queue is as long as it gets
        return login(server, f"127.0.2.{next(probes)}", alice.name, "x").status_code == 429

    wait_for(full, 60, "the queue of guesses to fill")
    attacks.tried(FREE + len(queued))
    right = login(server, "127.0.0.2", alice.name, alice.password)
    pool.shutdown(wait=False, cancel_futures=True)
    assert right.status_code == 200, right.text
