"""Fixtures of the workspace tests: real filesystems (the plain disk, loop-mounted XFS and
btrfs), real OS users (the shared `users` factory), a small git repository, and an engine.

Tests take `filesystem` and `strategy` from `parametrize`; `combinations()` lists every
strategy that must work on each filesystem. Everything needs root, else the tests skip."""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from claude_batch_server import accounts
from claude_batch_server.accounts import Account
from claude_batch_server.settings import CowStrategy
from claude_batch_server.workspaces import WorkspaceEngine, linux, trees
from tests.support.loopfs import LoopUnavailable, loop_filesystem
from tests.support.users import UserFactory
from tests.workspaces.helpers import GitRepo, make_repository

DISK_ROOT = Path("/var/tmp")  # the plain disk: /tmp is a tmpfs on many machines
DISK_TYPE = linux.filesystem_type(DISK_ROOT)
WORKING: dict[str, tuple[str, ...]] = {
    "btrfs": ("btrfs", "overlay", "reflink", "copy"),
    "xfs": ("overlay", "reflink", "copy"),
    "ext4": ("overlay", "copy"),
}
FILESYSTEMS = ("disk", "xfs", "btrfs")


def kind(filesystem: str) -> str:
    return DISK_TYPE if filesystem == "disk" else filesystem


def combinations(*only: str) -> list[tuple[str, str]]:
    """(filesystem, strategy) for each strategy that works on each filesystem (of `only`)."""
    return [
        (fs, name)
        for fs in FILESYSTEMS
        for name in WORKING.get(kind(fs), ("copy",))
        if not only or name in only
    ]


@pytest.fixture(scope="session")
def top() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("workspace tests need root: mounts, chown, users")
    path = Path(tempfile.mkdtemp(dir=DISK_ROOT, prefix="cbs-workspaces-"))
    path.chmod(0o755)  # the test users pass through it to their workspaces
    yield path
    trees.remove_tree(path)


@pytest.fixture(scope="session")
def xfs_root(top: Path) -> Iterator[Path]:
    yield from _loop_root("xfs", top)


@pytest.fixture(scope="session")
def btrfs_root(top: Path) -> Iterator[Path]:
    yield from _loop_root("btrfs", top)


def _loop_root(fstype: str, top: Path) -> Iterator[Path]:
    directory = top / fstype
    directory.mkdir()
    with ExitStack() as stack:
        try:
            root = stack.enter_context(loop_filesystem(fstype, directory))
        except LoopUnavailable as error:
            pytest.skip(f"cannot mount {fstype} here: {error}")
        yield root


@pytest.fixture
def data_dir(request: pytest.FixtureRequest, filesystem: str, top: Path) -> Iterator[Path]:
    """A fresh DATA_DIR on `filesystem`; whatever a test leaves in it is removed."""
    root = top if filesystem == "disk" else request.getfixturevalue(f"{filesystem}_root")
    path = root / f"data-{secrets.token_hex(4)}"
    path.mkdir(mode=0o755)
    yield path
    trees.remove_tree(path)


@pytest.fixture
def engine(data_dir: Path, strategy: str) -> WorkspaceEngine:
    return WorkspaceEngine(data_dir, CowStrategy(strategy))


@pytest.fixture
def make_account(users: UserFactory) -> Callable[[], Account]:
    def make() -> Account:
        account = accounts.lookup(users.create().name)
        assert account is not None
        return account

    return make


@pytest.fixture
def account(make_account: Callable[[], Account]) -> Account:
    return make_account()


@pytest.fixture
def source(top: Path) -> Iterator[GitRepo]:
    """The upstream repository the tests clone from, on the plain disk."""
    path = top / f"source-{secrets.token_hex(4)}"
    yield make_repository(path)
    trees.remove_tree(path)


@pytest.fixture
def adopt(engine: WorkspaceEngine, data_dir: Path) -> Callable[[GitRepo, str], Path]:
    """`adopt(source, name)`: clone as the repository service does, then adopt the clone."""

    def clone_and_adopt(repo: GitRepo, name: str = "repo") -> Path:
        staging = data_dir / f"staging-{secrets.token_hex(4)}"
        staging.mkdir(mode=0o700)
        tree = staging / "tree"
        subprocess.run(
            ["git", "clone", "--quiet", "--no-hardlinks", str(repo.path), str(tree)],
            check=True,
            capture_output=True,
        )
        try:
            return engine.adopt_repository(tree, name)
        finally:
            trees.remove_tree(staging)

    return clone_and_adopt
