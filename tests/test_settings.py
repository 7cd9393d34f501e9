"""Settings: a bad value stops the start with one line naming it; the JWT key is kept."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from claude_batch_server.jobs import landlock
from claude_batch_server.jobs.sandbox import Sandbox
from claude_batch_server.settings import Settings
from tests.support.server import SERVER_BIN, ServerFactory
from tests.support.users import UserFactory


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("JWT_KEY", "too-short"),
        ("PORT", "not-a-port"),
        ("AUTH_BACKEND", "ldap"),
        ("COW_STRATEGY", "hardlink"),
        ("MAX_CONCURRENT_JOBS", "0"),
        ("DATABASE_URL", "mysql://x"),
        ("TRUSTED_PROXIES", "nginx"),
        ("DATA_DIR_MIN_FREE", "120%"),
        ("DATA_DIR_MIN_FREE", "lots"),
        ("JOB_DISK_MAX", "lots"),
        ("JOB_OUTPUT_MAX_MB", "0"),
        ("JOB_SANDBOX", "maybe"),
    ],
)
def test_a_bad_value_stops_the_start_naming_the_variable(
    variable: str, value: str, tmp_path: Path
) -> None:
    env = {"PATH": os.environ["PATH"], "DATA_DIR": str(tmp_path), variable: value}
    result = subprocess.run(
        [str(SERVER_BIN), "serve"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"configuration error: {variable}:")
    assert value not in lines[0] or variable != "JWT_KEY"  # a key is never echoed


def test_env_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("MAX_CONCURRENT_JOBS=7\nALLOWED_USERS=a,b\n")
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.MAX_CONCURRENT_JOBS == 7
    assert settings.ALLOWED_USERS == ["a", "b"]


def test_trusted_proxies_are_addresses_or_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().TRUSTED_PROXIES == []  # none by default, not even loopback
    monkeypatch.setenv("TRUSTED_PROXIES", "172.30.87.2, 10.1.0.0/16,::1")
    assert [str(n) for n in Settings().TRUSTED_PROXIES] == [
        "172.30.87.2/32",
        "10.1.0.0/16",
        "::1/128",
    ]


def test_generated_key_is_kept_with_mode_0600(
    users: UserFactory, server_factory: ServerFactory, data_dir: Path
) -> None:
    user = users.create()
    server = server_factory(data_dir=data_dir, JWT_KEY="")
    token = server.login(user.name, user.password)
    key_file = data_dir / "jwt.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text()
    assert len(key) >= 32

    server.restart()
    assert key_file.read_text() == key
    with server.client(token) as client:
        assert client.get("/auth/me").status_code == 200
    assert key not in server.log()


@pytest.mark.parametrize(
    ("value", "total", "expected"),
    [("5%", 1000 << 20, 50 << 20), ("2G", 1, 2 << 30), ("500m", 1, 500 << 20), ("0", 9, 0)],
)
def test_min_free_space_is_a_size_or_a_share(value: str, total: int, expected: int) -> None:
    settings = Settings(DATA_DIR_MIN_FREE=value)
    assert settings.min_free_bytes(total) == expected


@pytest.mark.parametrize(
    ("value", "total", "expected"),
    [("", 1000, 200), ("10%", 1000 << 20, 100 << 20), ("2G", 1, 2 << 30), ("0", 9, 0)],
)
def test_job_disk_max_is_a_size_a_share_or_a_fifth_by_default(
    value: str, total: int, expected: int
) -> None:
    settings = Settings(JOB_DISK_MAX=value, MAX_CONCURRENT_JOBS=5)
    assert settings.job_disk_max(total) == expected


def test_job_sandbox_on_is_refused_where_the_kernel_has_no_landlock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(landlock, "abi", lambda libc=None: 0)
    with pytest.raises(ValidationError, match="no Landlock"):
        Settings(JOB_SANDBOX="on")
    assert Sandbox(Settings(JOB_SANDBOX="auto").JOB_SANDBOX, Path("/nonexistent")).abi == 0
