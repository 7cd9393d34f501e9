"""The worker threads of the short database reads that requests wait on.

A request never waits on the database in the event loop: it hands the read to a worker
thread. anyio's default pool runs up to 40 at once; with more threads than cores they
mostly contend for the GIL. Under `wrk -c50` on `GET /jobs` (bench/api.py) the server
spent more of its time in futex waits than in the work, and served 75 requests/s; with
these reads in as many threads as cores, 150. Long work (PAM's checks, git) stays in
anyio's default pool, where it cannot hold these up.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar, TypeVarTuple

import anyio
from anyio.lowlevel import RunVar

T = TypeVar("T")
Ts = TypeVarTuple("Ts")
_LIMITER: RunVar[anyio.CapacityLimiter] = RunVar("cbs_reads")


async def read(function: Callable[[*Ts], T], *args: *Ts) -> T:
    """`function(*args)` in one of the reads' worker threads."""
    try:
        limiter = _LIMITER.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(max(os.cpu_count() or 1, 2))
        _LIMITER.set(limiter)
    return await anyio.to_thread.run_sync(function, *args, limiter=limiter)
