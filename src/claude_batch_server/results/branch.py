"""`options.branch`: which names are taken, and the link that opens a pull request."""

from __future__ import annotations

import re
import subprocess
from urllib.parse import quote, urlsplit

from claude_batch_server.errors import BadRequest
from claude_batch_server.repositories.validation import BRANCH

PREFIX = "claude-batch/"
CHECK_TIMEOUT = 10
# git's own spellings of one remote: https://host/path, ssh://user@host/path, user@host:path
_SCP_LIKE = re.compile(r"^[A-Za-z0-9._-]+@(?P<host>[A-Za-z0-9.-]+):(?P<path>[^\\]+)$")


def checked(asked: str | bool, job_id: str, repository_branch: str | None) -> str | None:
    """The branch a job pushes to: `true` names `claude-batch/<jobId>`, `false` none. A
    name git refuses, one starting with '-' or the repository's own branch: 400."""
    if asked is False:
        return None
    name = f"{PREFIX}{job_id}" if asked is True else asked
    if name.startswith("-") or not BRANCH.fullmatch(name) or not _git_accepts(name):
        raise BadRequest(f"invalid branch name {name!r}: git refuses it")
    if name == repository_branch:
        raise BadRequest(f"branch {name!r} is the repository's own branch: name another")
    return name


def _git_accepts(name: str) -> bool:
    """`git check-ref-format --branch`, outside any repository (the name has passed the
    project's narrow pattern first: letters, digits and . _ / + - only)."""
    result = subprocess.run(
        ["git", "check-ref-format", "--branch", name],
        cwd="/",
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "GIT_CONFIG_NOSYSTEM": "1"},
        capture_output=True,
        timeout=CHECK_TIMEOUT,
        check=False,
    )
    return result.returncode == 0 and result.stdout.decode().strip() == name


def pull_request_url(git_url: str, branch: str, base: str | None) -> str | None:
    """The page that opens a pull request (GitHub) or merge request (GitLab) for `branch`,
    for a remote on either; None for any other remote."""
    host, path = _host_and_path(git_url)
    path = path.strip("/").removesuffix(".git")
    if not host or path.count("/") < 1:
        return None
    if host == "github.com":
        compare = f"{quote(base, safe='')}...{quote(branch, safe='')}" if base else quote(branch)
        return f"https://github.com/{path}/compare/{compare}?expand=1"
    if host == "gitlab.com" or host.startswith("gitlab."):
        query = f"merge_request%5Bsource_branch%5D={quote(branch, safe='')}"
        if base:
            query += f"&merge_request%5Btarget_branch%5D={quote(base, safe='')}"
        return f"https://{host}/{path}/-/merge_requests/new?{query}"
    return None


def _host_and_path(git_url: str) -> tuple[str, str]:
    scp = _SCP_LIKE.fullmatch(git_url)
    if scp:
        return scp["host"].lower(), scp["path"]
    parts = urlsplit(git_url)
    if parts.scheme not in {"https", "http", "ssh", "git"}:
        return "", ""
    return (parts.hostname or "").lower(), parts.path
