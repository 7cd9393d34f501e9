"""Who is calling, for the login throttle: the one place that decides it.

Every local user connects from loopback and owns all of 127.0.0.0/8, so on this host an
address tells nobody apart: one user could be sixteen million callers, and every local
user would share 127.0.0.1. A caller connecting from this host (from loopback, or from the
host's own address it connects to) is therefore known by the OS user owning its socket,
`uid:1001`; the kernel lists that socket, its two ends and its owner in /proc/net/tcp and
/proc/net/tcp6 (world-readable; `netstat -e` shows them). A caller from elsewhere keeps its
address, as does one forwarded by a TRUSTED_PROXIES proxy (its X-Forwarded-For).

A loopback caller whose socket is not listed is refused (503), never known by its address
instead: the socket is gone when the client hung up before its request was looked at (or
is a closed, ownerless one, listed with uid 0), and an address would hand the attacker who
hangs up on purpose his sixteen million callers back. The tables are read at most
`READ_CAP` bytes per lookup (about 50,000 sockets), stopping at the match: on a host with
more sockets than that, a loopback login may be refused too. Writing the tables costs the
kernel some 6 µs a socket (0.2 s for 30,000), so a local user holding many sockets slows
every loopback login, within the cap. The audit trail keeps the address.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

from claude_batch_server.errors import Unavailable

TCP = Path("/proc/net/tcp")
TCP6 = Path("/proc/net/tcp6")
READ_CAP = 8 * 1024 * 1024  # bytes of both tables read per lookup, at most

Endpoint = tuple[str, int]  # (address, port), as an ASGI scope holds them
Address = IPv4Address | IPv6Address


@dataclass(frozen=True)
class Caller:
    address: str  # for the audit trail: the client's address (a proxy's X-Forwarded-For)
    key: str  # for the throttle: "uid:N" for a caller on this host, else the address
    uid: int | None = None


def identify(
    socket_client: Endpoint | None, client: Endpoint | None, server: Endpoint | None
) -> Caller:
    """Blocking (reads /proc): the caller of a request, from the connection's own peer
    `socket_client`, the client as the proxy headers left it, and our end `server`."""
    if client is None:
        return Caller(address="", key="")
    address = client[0]
    if socket_client is None or server is None or client != socket_client:
        return Caller(address, address)  # forwarded by a trusted proxy: its word
    peer = _unmapped(address)
    loopback = peer is not None and peer.is_loopback
    if not loopback and (peer is None or peer != _unmapped(server[0])):
        return Caller(address, address)  # from elsewhere
    uid = socket_uid(client, server)
    if uid is not None:
        return Caller(address, f"uid:{uid}", uid)
    if loopback:
        raise Unavailable("cannot tell which local user is calling; try again")
    return Caller(address, address)  # one of this host's few addresses


def socket_uid(
    client: Endpoint, server: Endpoint, tables: tuple[Path, Path] = (TCP, TCP6), cap: int = READ_CAP
) -> int | None:
    """The uid owning the open socket at `client` that is connected to `server`, or None
    (no such socket, a closed one, or not within `cap` bytes of the tables)."""
    budget = cap
    for table, local, remote in _rows_to_find(client, server, tables):
        with table.open("rb") as rows:
            next(rows, None)  # the header
            for row in rows:
                budget -= len(row)
                if budget < 0:
                    return None
                fields = row.split()
                if len(fields) > 9 and fields[1] == local and fields[2] == remote:
                    # inode 0: no process holds it (closed, or a time-wait entry, uid 0)
                    return int(fields[7]) if fields[9] != b"0" else None
    return None


def _rows_to_find(
    client: Endpoint, server: Endpoint, tables: tuple[Path, Path]
) -> Iterator[tuple[Path, bytes, bytes]]:
    """Where the client's socket is listed, and how its two ends are written there: an
    IPv4 connection in `tcp`, or in `tcp6` when made from an IPv6 socket (::ffff:a.b.c.d)."""
    peer, ours = _unmapped(client[0]), _unmapped(server[0])
    peer_port, our_port = client[1], server[1]
    if isinstance(peer, IPv4Address) and isinstance(ours, IPv4Address):
        yield tables[0], _v4(peer, peer_port), _v4(ours, our_port)
        peer, ours = IPv6Address(f"::ffff:{peer}"), IPv6Address(f"::ffff:{ours}")
    if isinstance(peer, IPv6Address) and isinstance(ours, IPv6Address):
        yield tables[1], _v6(peer, peer_port), _v6(ours, our_port)


def _unmapped(text: str) -> Address | None:
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


# The kernel writes each 32-bit word of an address as a number in the host's byte order,
# and the port as a number: "0100007F:1F90" is 127.0.0.1:8080 on a little-endian host.


def _v4(address: IPv4Address, port: int) -> bytes:
    return f"{int.from_bytes(address.packed, sys.byteorder):08X}:{port:04X}".encode()


def _v6(address: IPv6Address, port: int) -> bytes:
    packed = address.packed
    words = (int.from_bytes(packed[i : i + 4], sys.byteorder) for i in range(0, 16, 4))
    return ("".join(f"{word:08X}" for word in words) + f":{port:04X}").encode()
