"""Logging in and out with `claude-batch`, and where the token is kept."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import httpx

from tests.client.support import Cli, CliWorld
from tests.jobs.conftest import JobWorldFactory
from tests.support.users import UserFactory


def token_file(cli: Cli) -> Path:
    return cli.home / ".config" / "claude-batch" / "credentials.json"


def test_login_keeps_the_token_private_and_logout_revokes_it(cli_world: CliWorld) -> None:
    cli, user = cli_world.cli, cli_world.member.user
    saved = token_file(cli)
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert stat.S_IMODE(saved.parent.stat().st_mode) == 0o700
    token = json.loads(saved.read_text())["token"]
    assert user.password not in saved.read_text()

    assert cli.ok("whoami").startswith(f"{user.name} (uid {user.uid})")
    me = json.loads(cli.ok("whoami", "--json"))
    assert me["user"] == user.name and me["server"] == cli.server.url

    assert "Logged out" in cli.ok("logout")
    assert not saved.exists()
    with httpx.Client(base_url=cli.server.url) as http:
        refused = http.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 401
    after = cli.run("whoami")
    assert after.returncode == 3
    assert after.stderr.strip() == "claude-batch: not logged in: run `claude-batch login`"


def test_a_refused_login_or_an_absent_server_is_exit_3(
    job_world: JobWorldFactory, users: UserFactory, tmp_path: Path
) -> None:
    server = job_world().server
    user = users.create()
    cli = Cli(server, tmp_path)

    wrong = cli.run("login", "-u", user.name, "--password-stdin", stdin="not-it\n")
    assert wrong.returncode == 3, wrong.stderr
    assert wrong.stderr == "claude-batch: invalid username or password\n"
    assert not token_file(cli).exists()

    no_terminal = cli.run("login", "-u", user.name)  # stdin is not a terminal
    assert no_terminal.returncode == 2
    assert "--password-stdin" in no_terminal.stderr

    cli.login(user)
    server.stop()
    gone = cli.run("whoami")
    assert gone.returncode == 3
    assert gone.stderr.startswith(f"claude-batch: cannot reach the server at {server.url}")
    assert len(gone.stderr.splitlines()) == 1


def test_login_on_a_terminal_does_not_echo_the_password(
    job_world: JobWorldFactory, users: UserFactory, tmp_path: Path
) -> None:
    server = job_world().server
    user = users.create()
    cli = Cli(server, tmp_path)

    code, shown = cli.on_terminal(
        "login", "--user", user.name, answers={"Password for": user.password + "\n"}
    )

    assert code == 0, shown
    assert f"Password for {user.name} at {server.url}:" in shown
    assert user.password not in shown
    assert f"Logged in to {server.url} as {user.name}" in shown
    assert json.loads(token_file(cli).read_text())["user"] == user.name
