"""A unified diff cut into files, each line marked as added, removed, a hunk header or
context, with the counts the page shows at its top."""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_LINES = 50_000  # lines of a diff shown; past them the page offers the download


@dataclass
class FileDiff:
    name: str
    lines: list[tuple[str, str]] = field(default_factory=list)  # (kind, text)
    added: int = 0
    removed: int = 0
    binary: bool = False
    in_hunk: bool = False  # past the file's first @@: +/- lines are changes


@dataclass
class Diff:
    files: list[FileDiff] = field(default_factory=list)
    cut: bool = False  # MAX_LINES reached

    @property
    def added(self) -> int:
        return sum(f.added for f in self.files)

    @property
    def removed(self) -> int:
        return sum(f.removed for f in self.files)


def _name(header: str) -> str:
    """`diff --git a/x b/x` → `x` (the b side; a name with spaces keeps them)."""
    rest = header.removeprefix("diff --git ")
    middle = rest.find(" b/")
    return rest[middle + 3 :] if middle >= 0 else rest


def _kind(line: str, in_hunk: bool) -> str:
    if line.startswith("@@"):
        return "hunk"
    if in_hunk and line.startswith("+"):
        return "add"
    if in_hunk and line.startswith("-"):
        return "del"
    return "context" if in_hunk else "meta"


def parse(data: bytes) -> Diff:
    diff = Diff()
    current: FileDiff | None = None
    for count, line in enumerate(data.decode("utf-8", errors="replace").splitlines()):
        if count >= MAX_LINES:
            diff.cut = True
            break
        if line.startswith("diff --git "):
            current = FileDiff(_name(line))
            diff.files.append(current)
            continue
        if current is None:
            continue
        kind = _kind(line, current.in_hunk)
        current.in_hunk |= kind == "hunk"
        current.added += kind == "add"
        current.removed += kind == "del"
        current.binary |= kind == "meta" and line.startswith("Binary files ")
        current.lines.append((kind, line))
    return diff
