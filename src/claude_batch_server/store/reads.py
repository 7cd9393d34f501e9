"""The worker threads of the short database reads that requests wait on.

A request never waits on the database in the event loop: it hands the read to a worker
thread. anyio's default pool runs up to 40 at once; with more threads than cores they
mostly contend for the GIL. Under `wrk -c50` on `GET /jobs` (bench/api.py) the server
spent more of its time in futex waits than in the work, and served 75 requests/s; with
these reads in as many threads as cores, 150. Long work (PAM's checks, git) stays in
anyio's default pool, where it cannot hold these up.

Listings (`GET /jobs`, up to 500 jobs a page) have threads of their own, as many again:
in the same queue, one user's listings held every other user's login, token check and
GET /jobs/{id} behind them (a second each, under four listings of large jobs).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar, TypeVarTuple

import anyio
from anyio.lowlevel import RunVar

T = TypeVar("T")
Ts = TypeVarTuple("Ts")
_SHORT: RunVar[anyio.CapacityLimiter] = RunVar("cbs_reads")
_LISTINGS: RunVar[anyio.CapacityLimiter] = RunVar("cbs_listings")


async def read(function: Callable[[*Ts], T], *args: *Ts) -> T:
    """`function(*args)` in one of the reads' worker threads."""
    return await anyio.to_thread.run_sync(function, *args, limiter=_limiter(_SHORT))


async def read_listing(function: Callable[[*Ts], T], *args: *Ts) -> T:
    """`function(*args)`, a page of a listing, in one of the listings' worker threads."""
    return await anyio.to_thread.run_sync(function, *args, limiter=_limiter(_LISTINGS))


def _limiter(threads: RunVar[anyio.CapacityLimiter]) -> anyio.CapacityLimiter:
    try:
        return threads.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(max(os.cpu_count() or 1, 2))
        threads.set(limiter)
        return limiter
