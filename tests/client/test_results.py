"""`claude-batch run --branch [NAME]` and `claude-batch patch ID`: what leaves the server,
from the command line."""

from __future__ import annotations

from pathlib import Path

from tests.client.support import Cli, CliWorld
from tests.fake_anthropic import FakeAnthropic
from tests.results.support import as_user, change_script, root_git
from tests.support.api import home_of

GITHUB_URL = "https://github.com/acme/shop.git"


def test_run_with_a_branch_prints_the_branch_and_the_pull_request_link(
    cli_world: CliWorld, fake_anthropic: FakeAnthropic
) -> None:
    """The repository is registered by its GitHub URL; the user's own ~/.gitconfig sends
    that URL to a bare repository of theirs (no traffic leaves the machine), for the
    clone and for the push, which both run as them."""
    member = cli_world.member
    home = home_of(member.user)
    bare = home / "shop.git"
    as_user(member.user, home, "clone", "-q", "--bare", str(home / "source-repo"), str(bare))
    as_user(member.user, home, "config", "--global", f"url.{bare}.insteadOf", GITHUB_URL)
    assert member.register("shop", GITHUB_URL).status_code == 202
    assert member.wait_repository("shop")["status"] == "ready"

    result = cli_world.cli.run(
        "run", "shop", f"Change it {change_script(fake_anthropic)}", "--follow", "--branch"
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    job_id = lines[0].split()[1]
    branch = f"claude-batch/{job_id}"
    commit = as_user(member.user, bare, "rev-parse", branch)
    assert lines[-2] == f"pushed branch {branch} ({commit[:12]})"
    assert lines[-1] == (
        f"open a pull request: https://github.com/acme/shop/compare/main...claude-batch%2F{job_id}"
        "?expand=1"
    )

    named = cli_world.cli.run(
        "run", "shop", f"Again {change_script(fake_anthropic)}", "--branch", "feature/cli", "-f"
    )
    assert named.returncode == 0, named.stderr
    assert named.stdout.splitlines()[-2].startswith("pushed branch feature/cli (")
    assert as_user(member.user, bare, "rev-parse", "--verify", "-q", "feature/cli")

    refused = cli_world.cli.run("run", "shop", "p", "--branch", "main")
    assert refused.returncode == 1
    assert "repository's own branch" in refused.stderr


def test_patch_pipes_into_git_am(
    cli_world: CliWorld, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    cli: Cli = cli_world.cli
    member = cli_world.member
    job_id = cli.ok("run", cli_world.repo, f"Change it {change_script(fake_anthropic)}").strip()
    member.wait_ended(job_id)

    patch = cli.run("patch", job_id)

    assert patch.returncode == 0, patch.stderr
    assert patch.stdout.startswith("From ") and "GIT binary patch" in patch.stdout
    fresh = tmp_path / "fresh"
    root_git(tmp_path, "clone", "-q", str(home_of(member.user) / "source-repo"), str(fresh))
    root_git(fresh, "am", "-q", stdin=patch.stdout.encode())
    assert (fresh / "hello.txt").read_text() == "hello world\n"
    assert not (fresh / "src" / "app.py").exists()
    workspace = cli_world.world.server.data_dir / "workspaces" / job_id
    assert (fresh / "data.bin").read_bytes() == (workspace / "data.bin").read_bytes()

    missing = cli.run("patch", "0" * 32)
    assert missing.returncode == 1 and "not found" in missing.stderr
