"""Who is calling, for the login throttle: the one place that decides it.

Every local user connects from loopback and owns all of 127.0.0.0/8, so on this host an
address tells nobody apart: one user could be sixteen million callers, and every local
user would share 127.0.0.1. A caller connecting from this host (from loopback, or from any
of the host's own addresses) is therefore known by the OS user owning its socket,
`uid:1001`; the kernel tells anyone the owner of a socket found by its two ends (`ss -e`
shows them). A caller from elsewhere keeps its
address, as does one forwarded by a TRUSTED_PROXIES proxy (its X-Forwarded-For).

A loopback caller whose socket is not found is refused (503), never known by its address
instead: the socket is gone when the client hung up before its request was looked at (or
is a closed, ownerless one), and an address would hand the attacker who hangs up on
purpose his sixteen million callers back. The kernel finds the socket by its two ends
(sock_diag, what `ss` asks: one hash lookup), so no number of sockets another user holds
hides it; /proc/net/tcp was read row by row and, capped, let one user holding 60,000
listening sockets (listed first) refuse every loopback login. The audit trail keeps the
address.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from socket import AF_INET, AF_INET6, IPPROTO_TCP

from pyroute2.netlink import NLM_F_REQUEST
from pyroute2.netlink.diag import SOCK_DIAG_BY_FAMILY, DiagSocket, inet_diag_req
from pyroute2.netlink.exceptions import NetlinkError

from claude_batch_server.errors import Unavailable

ALL_STATES = 0xFFFFFFFF
NO_COOKIE = 0xFFFFFFFFFFFFFFFF  # INET_DIAG_NOCOOKIE: find the socket by its ends alone
# ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING (include/net/tcp_states.h)
CONNECTED = frozenset({1, 4, 5, 8, 9, 11})

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
    """Blocking (one sock_diag lookup): the caller of a request, from the connection's own peer
    `socket_client`, the client as the proxy headers left it, and our end `server`."""
    if client is None:
        return Caller(address="", key="")
    address = client[0]
    if socket_client is None or server is None or client != socket_client:
        return Caller(address, address)  # forwarded by a trusted proxy: its word
    # any peer: a local user may connect from another of the host's addresses too
    uid = socket_uid(client, server)
    if uid is not None:
        return Caller(address, f"uid:{uid}", uid)
    peer = _unmapped(address)
    if peer is not None and peer.is_loopback:
        raise Unavailable("cannot tell which local user is calling; try again")
    return Caller(address, address)  # from elsewhere


def socket_uid(client: Endpoint, server: Endpoint) -> int | None:
    """The uid owning the open socket at `client` that is connected to `server`, or None
    (no such socket, or one not connected or owned by no process)."""
    peer, ours = _unmapped(client[0]), _unmapped(server[0])
    if peer is None or ours is None or peer.version != ours.version:
        return None
    request = inet_diag_req()
    # an IPv4 lookup finds IPv6 sockets connected to ::ffff:a.b.c.d too: one hash holds both
    request["sdiag_family"] = AF_INET if peer.version == 4 else AF_INET6
    request["sdiag_protocol"] = IPPROTO_TCP
    request["idiag_states"] = ALL_STATES
    request["idiag_sport"], request["idiag_dport"] = client[1], server[1]
    request["idiag_src"], request["idiag_dst"] = _words(peer), _words(ours)
    request["idiag_cookie"] = NO_COOKIE
    try:
        with DiagSocket() as diag:
            diag.bind()
            answers = list(diag.nlm_request(request, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST))
    except NetlinkError:  # not found (ENOENT), or the kernel would not say: refused
        return None
    for answer in answers:  # the socket, or an error message (type 2) when not found
        if answer["header"]["type"] != SOCK_DIAG_BY_FAMILY:
            continue
        # inode 0: no process holds it (closed, time-wait). Connected only: a listener is
        # nobody's client, and a socket bound to a remote client's address (IP_FREEBIND)
        # never gets past its SYN
        if answer["idiag_inode"] != 0 and answer["idiag_state"] in CONNECTED:
            return int(answer["idiag_uid"])
    return None


def _words(address: Address) -> tuple[int, int, int, int]:
    """An address as sock_diag takes it: four 32-bit words, most significant first."""
    packed = address.packed.ljust(16, b"\0")
    high, upper, lower, low = struct.unpack(">4I", packed)
    return high, upper, lower, low


def _unmapped(text: str) -> Address | None:
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
