"""Account facts: what a request's check may reuse, and when it must read them again."""

from __future__ import annotations

from pathlib import Path

from claude_batch_server.accounts import Recent


def test_recent_facts_are_reused_until_a_file_changes(tmp_path: Path) -> None:
    passwd, shadow = tmp_path / "passwd", tmp_path / "shadow"
    passwd.write_text("alice:x:1000:1000::/home/alice:/bin/sh\n")
    shadow.write_text("alice:$y$hash:19000:0:99999:7:::\n")
    reads: list[str] = []

    def read(name: str) -> str:
        reads.append(name)
        return shadow.read_text()

    recent = Recent(read, [passwd, shadow], seconds=3600)
    assert recent("alice") == recent("alice")
    assert reads == ["alice"]

    # usermod -L: a new file renamed over the old one
    replacement = tmp_path / "shadow.new"
    replacement.write_text("alice:!$y$hash:19000:0:99999:7:::\n")
    replacement.replace(shadow)
    assert recent("alice").startswith("alice:!")
    # an edit in place
    with passwd.open("a") as file:
        file.write("bob:x:1001:1001::/home/bob:/bin/sh\n")
    recent("alice")
    assert reads == ["alice", "alice", "alice"]


def test_recent_facts_expire(tmp_path: Path) -> None:
    reads: list[str] = []
    recent = Recent(lambda name: reads.append(name) or name, [tmp_path / "missing"], seconds=0)
    recent("alice")
    recent("alice")
    assert reads == ["alice", "alice"]
