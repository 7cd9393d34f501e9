"""What a repository name and a git URL may look like. Everything here is user input."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from claude_batch_server.errors import BadRequest

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
BRANCH = re.compile(r"^(?!-)(?!.*\.\.)[A-Za-z0-9._/+-]{1,255}$")
# user@host:path, git's scp-like syntax for ssh
SCP_LIKE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:(?!//)[^\s]+$")
URL_SCHEMES = {"https", "http", "ssh", "git", "file"}
MAX_URL = 2048


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise BadRequest(f"invalid repository name {name!r}: use letters, digits, '.', '_', '-'")
    return name


def check_branch(branch: str | None) -> str | None:
    if branch is not None and not BRANCH.match(branch):
        raise BadRequest("invalid branch name")
    return branch


def check_url(url: str) -> str:
    """A URL that git may clone through file, git, http(s) or ssh, and nothing else."""
    if len(url) > MAX_URL or not url.isprintable() or url != url.strip():
        raise BadRequest("invalid gitUrl")
    if url.startswith("/") or SCP_LIKE.match(url):
        return url
    scheme = urlsplit(url).scheme.lower()
    if scheme not in URL_SCHEMES or not url.lower().startswith(f"{scheme}://"):
        raise BadRequest(
            "invalid gitUrl: use https://, ssh://, git://, git@host:path, "
            "an absolute path or file://"
        )
    return url


def redact(text: str) -> str:
    """`text` with any password or token in URL user-info replaced, for errors and logs."""
    return re.sub(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@", r"\1***@", text)
