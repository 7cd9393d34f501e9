"""What a repository name and a git URL may look like. Everything here is user input."""

from __future__ import annotations

import re

from claude_batch_server.errors import BadRequest

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
NAME = re.compile(NAME_PATTERN)
# A local path, a URL of an allowed scheme, or git's user@host:path; no control characters.
URL_PATTERN = (
    r"^(/[^\x00-\x1f\x7f]*|(https?|ssh|git|file)://[^\x00-\x20\x7f]+"
    r"|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\x00-\x20\x7f]+)$"
)
URL = re.compile(URL_PATTERN)
# never starting with '-', so git cannot take it for an option
BRANCH_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9._/+-]{0,254}$"
BRANCH = re.compile(BRANCH_PATTERN)
MAX_URL = 2048


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise BadRequest(f"invalid repository name {name!r}: use letters, digits, '.', '_', '-'")
    return name


def check_branch(branch: str | None) -> str | None:
    if branch is not None and not BRANCH.fullmatch(branch):
        raise BadRequest("invalid branch name")
    return branch


def check_url(url: str) -> str:
    """A URL that git may clone through file, git, http(s) or ssh, and nothing else."""
    if len(url) > MAX_URL or not URL.fullmatch(url):
        raise BadRequest(
            "invalid gitUrl: use https://, ssh://, git://, git@host:path, "
            "an absolute path or file://"
        )
    return url


def check_text(field: str, text: str) -> str:
    """Free text (a prompt, a description): anything but NUL, which PostgreSQL cannot store
    and no C string can carry; refused alike on every database."""
    if "\0" in text:
        raise BadRequest(f"{field} holds a NUL character")
    return text


def redact(text: str) -> str:
    """`text` with any password or token in URL user-info replaced, for errors and logs."""
    return re.sub(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@", r"\1***@", text)
