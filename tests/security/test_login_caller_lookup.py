"""Attacks on how the login throttle tells local callers apart (auth/callers.py): the
server finds the socket of a loopback caller among the host's sockets and counts it as
the user owning it. A local user holds as many sockets as it likes; none of them may make
another user's right password refused."""

from __future__ import annotations

import pwd
import subprocess

import pytest

from tests.security.conftest import Attacks
from tests.security.test_login_throttle import PER_ADDRESS, guess
from tests.support.local_client import PYTHON, LocalClient
from tests.support.server import ServerFactory
from tests.support.users import UserFactory

LISTENERS = 15_000  # per process (each may open 20,000 files here)
PROCESSES = 4  # 60,000 listening sockets: more rows than one lookup reads

# Listening sockets on addresses of 127/8 nobody uses, held until stdin closes. Listening
# sockets were listed first in /proc/net/tcp, ahead of every connection.
HOLD = r"""
import os, socket, sys
n = int(sys.argv[1])
held = []
for i in range(n):
    s = socket.socket()
    s.bind((f"127.{200 + int(sys.argv[2])}.{i // 250}.{1 + i % 250}", 4242))
    s.listen(1)
    held.append(s)
print("ready", flush=True)
sys.stdin.read()
"""


def test_many_sockets_of_one_user_do_not_refuse_another_users_login(
    server_factory: ServerFactory, users: UserFactory, attacks: Attacks
) -> None:
    alice, mallory = users.create(), users.create()
    server = server_factory()
    gid = pwd.getpwuid(mallory.uid).pw_gid
    holders = [
        subprocess.Popen(
            [PYTHON, "-I", "-c", HOLD, str(LISTENERS), str(index)],
            user=mallory.uid,
            group=gid,
            extra_groups=[],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd="/",
            text=True,
        )
        for index in range(PROCESSES)
    ]
    try:
        for holder in holders:
            assert holder.stdout is not None
            assert holder.stdout.readline() == "ready\n"
        attacks.tried()
        with LocalClient(server, alice) as own:
            right = own.login("127.0.0.1", alice.name, alice.password)
    finally:
        for holder in holders:
            assert holder.stdin is not None and holder.stdout is not None
            holder.stdin.close()
            holder.wait(timeout=60)
            holder.stdout.close()
    assert right.status_code == 200, right.text


def host_addresses() -> list[str]:
    """This host's own IPv4 addresses other than loopback (the kernel's local table)."""
    found = []
    with open("/proc/net/fib_trie") as trie:
        previous = ""
        for line in trie:
            if "/32 host LOCAL" in line:
                address = previous.split()[-1]
                if not address.startswith("127.") and address not in found:
                    found.append(address)
            previous = line
    return found


@pytest.mark.skipif(not host_addresses(), reason="this host has no address but loopback")
def test_a_local_user_is_one_caller_from_the_hosts_other_addresses_too(
    server_factory: ServerFactory, users: UserFactory, attacks: Attacks
) -> None:
    """A local user may connect to the loopback server from one of the host's own other
    addresses (192.0.2.2 → 127.0.0.1): its socket is on this host all the same, so it is
    that user, already refused after twenty failures, not a fresh caller."""
    mallory = users.create()
    server = server_factory()
    with LocalClient(server, mallory) as attacker:
        sprayed = attacker.send(
            *(guess("127.0.0.1", f"nobody{i}", "guess") for i in range(PER_ADDRESS))
        )
        assert {a.status_code for a in sprayed} == {401}
        elsewhere = [
            attacker.login(address, mallory.name, mallory.password) for address in host_addresses()
        ]
    attacks.tried(len(sprayed) + len(elsewhere))
    assert {a.status_code for a in elsewhere} == {429}, [a.text for a in elsewhere]
