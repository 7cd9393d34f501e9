"""Account facts: what a request's check may reuse, and when it must read them again."""

from __future__ import annotations

from pathlib import Path

from claude_batch_server.accounts import AccountCache


def test_cached_facts_are_reused_until_a_file_changes(tmp_path: Path) -> None:
    passwd, shadow = tmp_path / "passwd", tmp_path / "shadow"
    passwd.write_text("alice:x:1000:1000::/home/alice:/bin/sh\n")
    shadow.write_text("alice:$y$hash:19000:0:99999:7:::\n")
    reads: list[str] = []

    def read(name: str) -> str:
        reads.append(name)
        return shadow.read_text()

    cache = AccountCache(read, [passwd, shadow], seconds=3600)
    assert cache("alice") == cache("alice")
    assert reads == ["alice"]

    # usermod -L: a new file renamed over the old one
    replacement = tmp_path / "shadow.new"
    replacement.write_text("alice:!$y$hash:19000:0:99999:7:::\n")
    replacement.replace(shadow)
    assert cache("alice").startswith("alice:!")
    # an edit in place
    with passwd.open("a") as file:
        file.write("bob:x:1001:1001::/home/bob:/bin/sh\n")
    cache("alice")
    assert reads == ["alice", "alice", "alice"]


def test_cached_facts_expire(tmp_path: Path) -> None:
    reads: list[str] = []
    cache = AccountCache(lambda name: reads.append(name) or name, [tmp_path / "missing"], seconds=0)
    cache("alice")
    cache("alice")
    assert reads == ["alice", "alice"]
