"""One diff of a workspace, in a process of its own inside a control group of its own.

    python -I -m claude_batch_server.files.diffproc < request.json > diff

Started by the server (root) with the request on stdin: it joins the group's cgroup.procs
files first, so git and everything git starts are inside the group's CPU and memory
limits, and the server can kill them all at once past the time limit. Files larger than
`max_file` bytes are left out, and named at the top of the diff (`git apply` skips such
lines); the walk that finds them reads metadata only, never follows a link (also one swapped in
during the walk), and stops
after MAX_ENTRIES entries.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from claude_batch_server.accounts import Account
from claude_batch_server.repositories import git
from claude_batch_server.servergit import Start

MAX_ENTRIES = 200_000  # entries of a workspace looked at for large files
MAX_LEFT_OUT = 1000  # large files named; past that, the diff is refused


def large_files(workspace: Path, max_file: int) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    seen = 0
    # by descriptors: a folder the job swaps for a symlink meanwhile is not entered (this
    # runs as root, and os.walk would follow it to wherever the job pointed it)
    for top, dirs, files, top_fd in os.fwalk(workspace, follow_symlinks=False):
        if top == str(workspace):
            dirs[:] = [name for name in dirs if name != ".git"]
        for name in files:
            seen += 1
            try:
                size = os.stat(name, dir_fd=top_fd, follow_symlinks=False).st_size
            except OSError:
                continue
            if size > max_file:
                found.append((str(Path(top, name).relative_to(workspace)), size))
        if seen > MAX_ENTRIES or len(found) > MAX_LEFT_OUT:
            break
    return found


def main() -> None:
    request = json.load(sys.stdin)
    for procs in request["cgroups"]:
        with open(procs, "w") as group:
            group.write(str(os.getpid()))
    fields = request["account"]
    account = Account(
        name=fields["name"],
        uid=fields["uid"],
        gid=fields["gid"],
        home=Path(fields["home"]),
        shell=fields["shell"],
        gids=tuple(fields["gids"]),
        groups=tuple(fields["groups"]),
    )
    workspace = Path(request["workspace"])
    large = large_files(workspace, request["max_file"])
    if len(large) > MAX_LEFT_OUT:
        sys.exit(f"more than {MAX_LEFT_OUT} files larger than {request['max_file']} bytes")
    try:
        start = Start(Path(request["stored"]), request["commit"])
        diff = git.diff_workspace(account, workspace, start, [p for p, _ in large])
    except git.GitError as error:
        sys.exit(str(error))
    for path, size in sorted(large):
        note = f"# left out, larger than {request['max_file']} bytes: {path!r} ({size} bytes)\n"
        sys.stdout.buffer.write(note.encode("utf-8", "surrogateescape"))
    sys.stdout.buffer.write(diff)


if __name__ == "__main__":
    main()
