"""Helpers of the workspace tests: a small git repository, running as a user, tree states."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from claude_batch_server.accounts import Account
from claude_batch_server.workspaces import linux

GIT_IDENTITY = ["-c", "user.name=Test", "-c", "user.email=test@example.invalid"]
# What an agent does to files: write, append, delete, rename (a file and a folder), chmod,
# create -- and then commit, which writes into .git.
EDITS = f"""
printf 'rewritten\\n' > src/app.py
printf 'more\\n' >> docs/readme.txt
rm data/blob.bin
mv bin/run.sh bin/start.sh
mv src/pkg src/package
chmod 600 src/package/deep/module.py
chmod 700 docs
mkdir -p new/folder && echo new > new/folder/file.txt
git add -A
git {" ".join(GIT_IDENTITY)} commit --quiet -m edits
"""


@dataclass
class GitRepo:
    path: Path
    commits: list[str] = field(default_factory=list)

    def commit(self, files: dict[str, bytes], message: str) -> str:
        for name, data in files.items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        git(self.path, "add", "-A")
        git(self.path, *GIT_IDENTITY, "commit", "--quiet", "-m", message)
        self.commits.append(git(self.path, "rev-parse", "HEAD"))
        return self.commits[-1]


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return result.stdout.strip()


def make_repository(path: Path) -> GitRepo:
    """Nested folders, an executable, a binary file, symlinks to a file and to a folder."""
    path.mkdir()
    git(path, "init", "--quiet", "--initial-branch=main")
    repo = GitRepo(path)
    (path / "bin").mkdir()
    (path / "bin" / "run.sh").write_text("#!/bin/sh\necho run\n")
    (path / "bin" / "run.sh").chmod(0o755)
    (path / "README.md").symlink_to("docs/readme.txt")
    (path / "source").symlink_to("src")
    repo.commit(
        {
            "docs/readme.txt": b"read me\n",
            "src/app.py": b"print('app')\n",
            "src/pkg/deep/module.py": b"VALUE = 1\n" * 100,
            "data/blob.bin": bytes(range(256)) * 256,
        },
        "first",
    )
    repo.commit({"src/app.py": b"print('app, second')\n"}, "second")
    return repo


def as_user(account: Account, script: str, cwd: Path) -> str:
    """Run `script` with sh as the account, in `cwd`; its output, or the test fails."""
    result = subprocess.run(
        ["sh", "-ec", script],
        cwd=cwd,
        user=account.uid,
        group=account.gid,
        extra_groups=list(account.supplementary_gids),
        env={
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(account.home),
            "USER": account.name,
            "LANG": "C.UTF-8",
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"{script!r} failed as {account.name}: {result.stderr}"
    return result.stdout


def tree_state(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry beneath `root` (root included) by relative path: type and mode, owner,
    size, modification time, and the bytes' digest or the link's target."""
    state = {".": _entry_state(root)}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory, name)
            state[str(path.relative_to(root))] = _entry_state(path)
    return state


def _entry_state(path: Path) -> tuple[object, ...]:
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        content: str = str(path.readlink())
    elif stat.S_ISREG(st.st_mode):
        content = hashlib.sha256(path.read_bytes()).hexdigest()
    else:
        content = ""
    return (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, content)


def is_subvolume(path: Path) -> bool:
    """On btrfs, the root directory of every subvolume has inode number 256."""
    return linux.filesystem_type(path) == "btrfs" and path.lstat().st_ino == 256


def owners(root: Path) -> set[tuple[int, int]]:
    """The (uid, gid) pairs of every entry beneath `root`, root included."""
    found = {(root.lstat().st_uid, root.lstat().st_gid)}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            st = Path(directory, name).lstat()
            found.add((st.st_uid, st.st_gid))
    return found
