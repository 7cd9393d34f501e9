"""Who is calling (auth/callers.py), against real sockets: a connection opened by a test
user's process is found by the kernel (sock_diag) with that user's uid, over IPv4, IPv6, to
a dual-stack listener and from an IPv6 socket to an IPv4 one; once the client has gone its
socket has no owner, and a loopback caller is then refused rather than known by its
address. Forwarded and remote callers keep their address."""

from __future__ import annotations

import pwd
import socket
import subprocess
from collections.abc import Iterator
from contextlib import closing, contextmanager

import pytest

from claude_batch_server.auth.callers import Caller, Endpoint, identify, socket_uid
from claude_batch_server.errors import Unavailable
from tests.support.server import wait_for
from tests.support.users import OsUser, UserFactory

# run as the test user by the system's Python: bind, connect, say the port, hold on
HOLD = r"""
import socket, sys
source, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
connection = socket.socket(socket.AF_INET6 if ":" in source else socket.AF_INET)
connection.bind((source, 0))
connection.connect((host, port))
print(connection.getsockname()[1], flush=True)
sys.stdin.read()
"""


@contextmanager
def listening(address: str) -> Iterator[socket.socket]:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with closing(socket.socket(family)) as listener:
        if family == socket.AF_INET6:  # ::ffff:127.0.0.1 takes IPv4 connections too
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        listener.bind((address, 0))
        listener.listen()
        yield listener


@contextmanager
def connection_of(
    user: OsUser, source: str, listener: socket.socket, target: str
) -> Iterator[tuple[Endpoint, Endpoint]]:
    """A connection from `source` to the listener (reached at `target`) that `user`'s
    process holds: its two ends as the server sees them, (client, server)."""
    port = listener.getsockname()[1]
    holder = subprocess.Popen(
        ["/usr/bin/python3", "-I", "-c", HOLD, source, target, str(port)],
        user=user.uid,
        group=pwd.getpwuid(user.uid).pw_gid,
        extra_groups=[],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd="/",
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline().strip().isdigit()
        accepted, _ = listener.accept()
        with closing(accepted):
            yield accepted.getpeername()[:2], accepted.getsockname()[:2]
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()


@pytest.mark.parametrize(
    ("listen", "source", "target"),
    [
        ("127.0.0.1", "127.0.0.5", "127.0.0.1"),  # tcp
        ("::1", "::1", "::1"),  # tcp6
        ("::ffff:127.0.0.1", "127.0.0.6", "127.0.0.1"),  # dual-stack: the peer is mapped
        ("127.0.0.1", "::ffff:127.0.0.7", "::ffff:127.0.0.1"),  # an IPv6 client socket
    ],
)
def test_a_local_connection_is_its_owners(
    users: UserFactory, listen: str, source: str, target: str
) -> None:
    user = users.create()
    with listening(listen) as listener:
        with connection_of(user, source, listener, target) as (client, server):
            assert socket_uid(client, server) == user.uid
            assert identify(client, client, server) == Caller(
                client[0], f"uid:{user.uid}", user.uid
            )
            assert socket_uid(client, (server[0], 1)) is None  # no connection to that port
        # the client has gone: its socket is closed, listed (if at all) with no owner
        wait_for(lambda: socket_uid(client, server) is None, 30, "the socket to lose its owner")
        with pytest.raises(Unavailable):
            identify(client, client, server)


def test_forwarded_and_remote_callers_keep_their_address() -> None:
    server = ("127.0.0.1", 8000)
    proxy = ("127.0.0.1", 41000)
    assert identify(proxy, ("198.51.100.7", 0), server) == Caller("198.51.100.7", "198.51.100.7")
    remote = ("203.0.113.9", 41000)
    assert identify(remote, remote, ("192.0.2.1", 8000)) == Caller("203.0.113.9", "203.0.113.9")
