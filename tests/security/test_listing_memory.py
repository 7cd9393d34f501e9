"""The listing pages a server keeps (api/listings.py) stay within their bound of memory,
measured, not as counted: a user asks for as many distinct small pages as she likes (each
cursor her own, any status and limit; an admin any `user=` name too), and a page of no
job is some 30 bytes while keeping it costs some 700. Weighed by its bytes alone, a bound
of 32 MiB held a million of them, about 800 MB."""

from __future__ import annotations

import secrets
import tracemalloc
from collections.abc import Callable

import pytest

from claude_batch_server.api.listings import ListingPages, PageKey
from claude_batch_server.jobs.status import JobStatus
from tests.security.conftest import Attacks

BOUND = 2**20  # bytes
PAGES = 20_000
EMPTY = b'{"jobs":[],"nextCursor":null}'


def by_cursor(n: int) -> tuple[PageKey, int]:
    """Her own listing, at a cursor of her making (any that matches CURSOR_PATTERN)."""
    cursor = f"{n:020d}-{secrets.token_hex(16)}"
    return PageKey("alice", JobStatus.COMPLETED, 1 + n % 500, cursor), 1


def by_owner(n: int) -> tuple[PageKey, int]:
    """An admin's listing of a user of a long name, whom no job has (version 0)."""
    return PageKey(f"{n:0255d}", None, 50, None), 0


@pytest.mark.parametrize("query", [by_cursor, by_owner])
def test_many_small_pages_take_no_more_memory_than_the_bound(
    query: Callable[[int], tuple[PageKey, int]], attacks: Attacks
) -> None:
    pages = ListingPages(max_bytes=BOUND)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        attacks.tried()
        for n in range(PAGES):
            last = query(n)
            pages.keep(*last, bytes(EMPTY))  # a page as rendered: an object of its own
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held <= BOUND, f"{held} bytes held for a bound of {BOUND}"
    assert pages.get(*last) == EMPTY  # the latest is kept
