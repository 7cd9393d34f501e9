"""Attacks on the login throttle from loopback, where every local user connects and owns all
of 127.0.0.0/8 (a client socket is bound to 127.0.x.y). A caller on this host is its OS user:
the attacks run in processes of their own users (tests/support/local_client.py), and so
does the victim logging in as herself. A stranger cannot lock a user out, many callers
together guess one password no faster than the documented rate, a forged X-Forwarded-For
neither dodges the per-caller limit nor lands in the audit trail, and /metrics does not
tell an unknown user from a wrong password."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager

import httpx

from tests.security.conftest import Attacks
from tests.support.local_client import LocalClient, Request
from tests.support.server import LiveServer, ServerFactory, wait_for
from tests.support.users import OsUser, UserFactory

FREE = 5  # README "Logging in": failures of a name checked at once
INTERVAL = 5.0  # then one check of the name per this many seconds, whatever the caller
PER_ADDRESS = 20  # failures of one caller before it is refused


@contextmanager
def client_from(
    server: LiveServer, address: str, token: str | None = None
) -> Iterator[httpx.Client]:
    """A client of this (root's) process, from `address`."""
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


def guess(address: str, username: str, password: str) -> Request:
    return Request("/auth/login", address, json={"username": username, "password": password})


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


def test_failures_of_one_local_user_never_lock_out_another(
    server_factory: ServerFactory, users: UserFactory, attacks: Attacks
) -> None:
    alice, mallory = users.create(), users.create()
    server = server_factory()
    with LocalClient(server, mallory) as attacker, LocalClient(server, alice) as own:
        # what locked alice out for minutes before: a few failures, then many at once
        for _ in range(FREE):
            assert attacker.login("127.0.0.1", alice.name, "guess").status_code == 401
        burst = attacker.send(*(guess("127.0.0.1", alice.name, f"guess{i}") for i in range(30)))
        attacks.tried(FREE + len(burst))
        assert {response.status_code for response in burst} <= {401, 429}
        right = own.login("127.0.0.2", alice.name, alice.password)
    assert right.status_code == 200, right.text
    assert right.json()["user"] == alice.name


def test_a_queue_of_guesses_from_many_addresses_does_not_lock_the_user_out(
    server_factory: ServerFactory, users: UserFactory, attacks: Attacks
) -> None:
    """What locked a user out before: one local user guessing from fifteen of its loopback
    addresses at once, round after round. Fifteen callers would hold fifteen places in the
    name's queue (75 s, past its longest wait) and the right password would be refused like
    the guesses; one OS user is one caller, with one place. The victim logs in as herself
    (her own process, not root: a caller like any other) from an address that never
    failed, while the attack goes on."""
    alice, mallory = users.create(), users.create()
    server = server_factory()
    statuses: list[int] = []
    stop = threading.Event()
    with LocalClient(server, mallory) as attacker, LocalClient(server, alice) as own:
        for _ in range(FREE):  # past the free checks: from now on the name's are queued
            assert attacker.login("127.0.0.3", alice.name, "guess").status_code == 401

        def attack() -> None:
            for _ in range(20):  # rounds, at most: each waits for its queued guesses
                if stop.is_set():
                    return
                guesses = (guess(f"127.0.1.{i}", alice.name, f"guess{i}") for i in range(1, 16))
                attacker.send(*guesses, each=lambda answer: statuses.append(answer.status_code))

        attacking = threading.Thread(target=attack)
        attacking.start()
        try:
            # a guess turned away at once: the queue holds all the attacker's it will
            wait_for(lambda: 429 in statuses, 60, "the attacker's queue to be full")
            right = own.login("127.0.0.2", alice.name, alice.password)
        finally:
            stop.set()
            attacking.join()
    attacks.tried(FREE + len(statuses))
    assert right.status_code == 200, right.text
    assert set(statuses) == {401, 429}


def test_a_local_user_failing_too_often_blocks_itself_alone(
    server_factory: ServerFactory, users: UserFactory, attacks: Attacks
) -> None:
    """Twenty failures refuse the caller that failed, from any of its addresses and even
    with a right password; another local user coming from the same 127.0.0.1 gets in."""
    bob, mallory = users.create(), users.create()
    server = server_factory()
    with LocalClient(server, mallory) as attacker, LocalClient(server, bob) as other:
        sprayed = attacker.send(
            *(guess("127.0.0.1", f"nobody{i}", "guess") for i in range(PER_ADDRESS + 1))
        )
        attacks.tried(len(sprayed))
        assert sorted(a.status_code for a in sprayed) == [401] * PER_ADDRESS + [429]
        elsewhere = attacker.login("127.0.0.9", mallory.name, mallory.password)
        right = other.login("127.0.0.1", bob.name, bob.password)
    assert elsewhere.status_code == 429
    assert 0 < int(elsewhere.headers["Retry-After"]) <= 60
    assert right.status_code == 200, right.text


def test_many_local_users_guess_one_name_at_the_documented_rate(
    server_factory: ServerFactory, users: UserFactory, attacks: Attacks
) -> None:
    """Eight local users, each from an address of its own, guess one name at once."""
    admins = users.group()
    alice = users.create()
    server = server_factory(ADMIN_GROUP=admins)
    admin_token = admin_of(server, users, admins)
    addresses = [f"127.0.0.{i}" for i in range(3, 11)]
    with ExitStack() as stack:
        clients = [stack.enter_context(LocalClient(server, users.create())) for _ in addresses]
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(clients)) as pool:
            answers = list(
                pool.map(lambda c, a: c.login(a, alice.name, f"guess-{a}"), clients, addresses)
            )
        elapsed = time.monotonic() - started
    attacks.tried(len(answers))
    assert {answer.status_code for answer in answers} <= {401, 429}

    trail = [entry for entry in audit_of(server, admin_token, alice.name)]
    checked = [entry for entry in trail if entry["outcome"] == "failed"]
    # the trail keeps each caller's address
    assert {entry["address"] for entry in checked} <= set(addresses)
    # every check happened while the test waited: the serialised ones are INTERVAL apart
    assert len(checked) <= FREE + int(elapsed // INTERVAL) + 1, (len(checked), elapsed)
    # ... and the guesses past the free ones were slowed, not refused
    assert len(checked) > FREE
    # meanwhile alice, from an address that never failed, still gets in
    with LocalClient(server, alice) as own:
        assert own.login("127.0.0.2", alice.name, alice.password).status_code == 200


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
