"""Fixtures shared by every test module: factories that clean up after themselves."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from claude_batch_server.store import migrate
from claude_batch_server.store.db import Database
from tests.support.mounts import unmount_beneath
from tests.support.postgres import PostgresCluster, running_cluster
from tests.support.server import LiveServer, ServerFactory
from tests.support.users import UserFactory

TEST_JWT_KEY = "test-key-" + "k" * 60


@pytest.fixture
def users() -> Iterator[UserFactory]:
    factory = UserFactory()
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind: tests that take it run on both."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return cluster.create_database()


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """That database, migrated and open; closed at the end."""
    database = Database(database_url)
    migrate.upgrade(database)
    yield database
    database.close()


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temporary folder that other users may traverse (pytest's own is root's alone):
    the server's DATA_DIR must be, for jobs run as users to reach their workspaces."""
    path = Path(tempfile.mkdtemp(prefix="cbs-test-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    unmount_beneath(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def data_dir(open_tmp: Path) -> Path:
    path = open_tmp / "data"
    path.mkdir()
    return path


@pytest.fixture
def server_factory(open_tmp: Path) -> Iterator[ServerFactory]:
    """`server_factory(**env)` starts a real server; every one is stopped afterwards."""
    started: list[LiveServer] = []

    def start(data_dir: Path | None = None, **env: str) -> LiveServer:
        directory = data_dir or open_tmp / f"data{len(started)}"
        directory.mkdir(exist_ok=True)
        env.setdefault("JWT_KEY", TEST_JWT_KEY)
        server = LiveServer(directory, env)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


def pytest_report_header() -> str:
    return f"running as uid {os.getuid()}"


# The security suite's closing line: here, where pytest-xdist's controlling process sees it.
TRIED: list[int] = []
BREACHES: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed and "tests/security/" in report.nodeid:
        BREACHES.append(report.nodeid)
    if report.when == "teardown":
        TRIED.extend(count for name, count in report.user_properties if name == "attacks")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TRIED:
        return
    verdict = "none got through" if not BREACHES else f"{len(BREACHES)} tests failed"
    terminalreporter.write_line(f"security suite: {sum(TRIED)} attacks tried, {verdict}")
