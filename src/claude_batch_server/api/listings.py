"""Pages of job listings kept as they were sent, for as long as the database says that
nothing in them has changed.

A first page of 50 jobs costs about 1.3 ms of CPU to read and render, where a token check
and one row cost a third of it (bench/api.py); dashboards and `cbs watch` ask for the same
page every few seconds. Each user's jobs have a version in the database that triggers
bump in the transaction of every change to them, by any statement of any process
(store/migrations 0010). A page is kept under the version read before the page was: the
page is at least that current, so while the version stays the same, the page is the
page, and one indexed read tells.

Not kept: pages with queued jobs (their positions move as other users' jobs leave the
queue), listings of every user's jobs (no one version covers them), pages over
MAX_PAGE_BYTES. At most MAX_BYTES are kept, each page weighed with what keeping it costs
(its query too: a user may ask for any number of small pages, each by a cursor of its
own); the least recently used page goes first.
Used from the event loop only.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import NamedTuple

MAX_BYTES = 32 * 2**20  # of pages kept, all together
MAX_PAGE_BYTES = 2**20  # of one page kept: a page may be up to a few MiB (PAGE_CHARS)
# what keeping a page costs besides its bytes and its query's strings: the key's and the
# value's tuples, the dict's slot and link, the numbers (about 330 bytes on CPython 3.11)
ENTRY_BYTES = 512


class PageKey(NamedTuple):
    owner: str  # whose jobs
    status: str | None
    limit: int
    cursor: str | None


class ListingPages:
    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        # one page per query: the count of changes it was read at, the page, its weight
        self._pages: OrderedDict[PageKey, tuple[int, bytes, int]] = OrderedDict()
        self._bytes = 0
        self._max_bytes = max_bytes

    async def page(
        self, key: PageKey, version: int, render: Callable[[], Awaitable[tuple[bytes, bool]]]
    ) -> bytes:
        """The page kept for `key` at `version` (the owner's count of changes, read before),
        else the one `render()` makes, kept if it says it may be."""
        page = self.get(key, version)
        if page is None:
            page, keepable = await render()
            if keepable:
                self.keep(key, version, page)
        return page

    def get(self, key: PageKey, version: int) -> bytes | None:
        """The page as sent, if it was kept at `version`."""
        kept = self._pages.get(key)
        if kept is None or kept[0] != version:
            return None
        self._pages.move_to_end(key)
        return kept[1]

    def keep(self, key: PageKey, version: int, page: bytes) -> None:
        if len(page) > MAX_PAGE_BYTES:
            return
        self._drop(key)
        weight = len(page) + ENTRY_BYTES + sum(sys.getsizeof(p) for p in key if p is not None)
        self._pages[key] = (version, page, weight)
        self._bytes += weight
        while self._bytes > self._max_bytes:
            self._drop(next(iter(self._pages)))

    def _drop(self, key: PageKey) -> None:
        kept = self._pages.pop(key, None)
        if kept is not None:
            self._bytes -= kept[2]
