"""A throwaway PostgreSQL 15 cluster on a unix socket, started and stopped by the tests."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import make_url

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"  # initdb refuses root; the Debian package's account runs it


class PostgresCluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.socket_dir = root / "socket"

    def _as_postgres(self, *args: str) -> None:
        subprocess.run(["runuser", "-u", PG_USER, "--", *args], check=True, capture_output=True)

    def start(self) -> None:
        self.socket_dir.mkdir()
        shutil.chown(self.root, PG_USER)
        shutil.chown(self.socket_dir, PG_USER)
        self._as_postgres(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-U",
            PG_USER,
            "--auth=trust",
            "-E",
            "UTF8",
        )
        options = f"-k {self.socket_dir} -c listen_addresses='' -c fsync=off -c max_connections=200"
        self._as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-w",
            "-o",
            options,
            "-l",
            str(self.root / "log"),
            "start",
        )

    def stop(self) -> None:
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")

    def create_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        name = f"t_{secrets.token_hex(6)}"
        self._as_postgres(str(PG_BIN / "createdb"), "-h", str(self.socket_dir), name)
        return f"postgresql://{PG_USER}@/{name}?host={self.socket_dir}"

    def cut_connections(self, url: str) -> None:
        """Ends every connection to the database of `url`, as a server restart would."""
        name = make_url(url).database  # one of ours: t_ and hex digits
        query = f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"  # noqa: S608
        self._as_postgres(
            str(PG_BIN / "psql"), "-h", str(self.socket_dir), "-d", "postgres", "-c", query
        )

    def drop_database(self, url: str) -> None:
        """Drops the database under a running server's feet (its connections are cut)."""
        name = make_url(url).database
        self._as_postgres(
            str(PG_BIN / "psql"),
            "-h",
            str(self.socket_dir),
            "-d",
            "postgres",
            "-c",
            f'DROP DATABASE "{name}" WITH (FORCE)',
        )


@contextmanager
def running_cluster() -> Iterator[PostgresCluster]:
    root = Path(tempfile.mkdtemp(prefix="cbs-pg-", dir="/var/tmp"))
    root.chmod(0o755)
    cluster = PostgresCluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        if (cluster.data / "postmaster.pid").exists():
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
