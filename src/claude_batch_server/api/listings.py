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
    version: int  # of the owner's jobs, read before the page


class ListingPages:
    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        # one page per query, at the version it was read at
        self._pages: OrderedDict[tuple[object, ...], tuple[int, bytes, int]] = OrderedDict()
        self._bytes = 0
        self._max_bytes = max_bytes

    def get(self, key: PageKey) -> bytes | None:
        """The page as sent, if it was kept at `key.version`."""
        kept = self._pages.get(key[:-1])
        if kept is None or kept[0] != key.version:
            return None
        self._pages.move_to_end(key[:-1])
        return kept[1]

    def keep(self, key: PageKey, page: bytes) -> None:
        if len(page) > MAX_PAGE_BYTES:
            return
        query = key[:-1]
        self._drop(query)
        weight = len(page) + ENTRY_BYTES + sum(sys.getsizeof(p) for p in query if p is not None)
        self._pages[query] = (key.version, page, weight)
        self._bytes += weight
        while self._bytes > self._max_bytes:
            self._drop(next(iter(self._pages)))

    def _drop(self, query: tuple[object, ...]) -> None:
        kept = self._pages.pop(query, None)
        if kept is not None:
            self._bytes -= kept[2]
