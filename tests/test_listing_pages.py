"""The listing pages a server keeps (api/listings.py): one per query, current only at the
version it was kept at, within a bound of memory."""

from __future__ import annotations

from claude_batch_server.api.listings import ENTRY_BYTES, MAX_PAGE_BYTES, ListingPages, PageKey

PAGE = 100_000  # bytes


def key(owner: str = "alice", version: int = 1, cursor: str | None = None) -> tuple[PageKey, int]:
    """A query's key, and the count of changes it is asked at."""
    return PageKey(owner, None, 50, cursor), version


def test_a_page_is_served_only_at_the_version_it_was_kept_at() -> None:
    pages = ListingPages()
    pages.keep(*key(version=1), b"one")
    assert pages.get(*key(version=1)) == b"one"
    assert pages.get(*key(version=2)) is None
    assert pages.get(*key(owner="bob", version=1)) is None
    pages.keep(*key(version=2), b"two")  # replaces the page of the same query
    assert pages.get(*key(version=1)) is None
    assert pages.get(*key(version=2)) == b"two"


def test_pages_beyond_the_bound_go_least_recently_used_first() -> None:
    # three pages fit, with what keeping each costs besides its bytes (ENTRY_BYTES and more)
    pages = ListingPages(max_bytes=3 * (PAGE + 2 * ENTRY_BYTES))
    for n in range(3):
        pages.keep(*key(cursor=str(n)), bytes(PAGE))
    assert pages.get(*key(cursor="0")) is not None  # used: "1" is now the oldest
    pages.keep(*key(cursor="3"), bytes(PAGE))
    assert [pages.get(*key(cursor=str(n))) is not None for n in range(4)] == [
        True,
        False,
        True,
        True,
    ]
    pages.keep(*key(cursor="4"), bytes(3 * PAGE))  # fills it alone
    assert [pages.get(*key(cursor=str(n))) is not None for n in range(5)] == [False] * 4 + [True]


def test_a_page_too_large_to_keep_is_not_kept() -> None:
    pages = ListingPages()
    pages.keep(*key(), bytes(MAX_PAGE_BYTES + 1))
    assert pages.get(*key()) is None
