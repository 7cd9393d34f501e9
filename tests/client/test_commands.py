"""`claude-batch repos …` and `jobs …`, and the exit codes a script relies on."""

from __future__ import annotations

import json
from pathlib import Path

from tests.client.support import Cli, CliWorld
from tests.fake_anthropic import FakeAnthropic, Hang, marker
from tests.jobs.conftest import JobWorldFactory
from tests.support.api import home_of, make_git_repo
from tests.support.users import UserFactory


def test_repository_commands(cli_world: CliWorld) -> None:
    cli, user = cli_world.cli, cli_world.member.user
    folder = home_of(user) / "second"
    folder.mkdir()
    source = make_git_repo(folder, user, {"notes.txt": "two\n"})
    name = f"two-{user.name}"

    registered = cli.ok("repos", "register", name, str(source), "--wait", "--description", "Two")
    assert "status         ready" in registered and "description    Two" in registered
    assert name in cli.ok("repos", "list")
    shown = json.loads(cli.ok("repos", "show", name, "--json"))
    assert shown["status"] == "ready" and shown["gitUrl"] == str(source)
    assert cli.ok("repos", "pull", name).startswith(f"Pulling {name}")

    again = cli.run("repos", "register", name, str(source))
    assert again.returncode == 1 and len(again.stderr.splitlines()) == 1
    assert name in again.stderr

    broken = cli.run("repos", "register", f"gone-{user.name}", str(folder / "nothing"), "--wait")
    assert broken.returncode == 1 and "status         failed" in broken.stdout

    assert cli.ok("repos", "rm", name) == f"Removed {name}.\n"
    missing = cli.run("repos", "show", name)
    assert missing.returncode == 1
    assert missing.stderr == f"claude-batch: repository {name!r} not found\n"


def test_job_commands_list_show_resume_cancel_remove(
    cli_world: CliWorld, fake_anthropic: FakeAnthropic
) -> None:
    cli = cli_world.cli
    first = cli.ok("run", cli_world.repo, f"First {marker('two-answers')}", "-f")
    job_id = first.splitlines()[0].split()[1]

    listed = cli.ok("jobs", "list").splitlines()
    assert listed[0].split()[:2] == ["JOB", "STATUS"]
    assert listed[1].startswith(f"{job_id}  completed")
    assert listed[1].rstrip().endswith(f"First {marker('two-answers')}")  # text, not markup
    only = json.loads(cli.ok("--json", "jobs", "list", "--status", "completed"))
    assert [job["jobId"] for job in only] == [job_id]
    details = cli.ok("jobs", "show", job_id)
    assert "output      First answer." in details and "turns       1" in details

    resumed = cli.run("jobs", "resume", job_id, "And then?", "--follow")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith("▶ run 2 started (resumed)\n")
    assert "Second answer." in resumed.stdout and "First answer." not in resumed.stdout

    fake_anthropic.add_script("cli-hang", [Hang()])
    hanging = cli.ok("run", cli_world.repo, f"Hang {marker('cli-hang')}").strip()
    cli_world.member.wait_status(hanging, {"running"})
    assert cli.ok("jobs", "cancel", hanging).startswith(hanging)
    followed = cli.run("logs", hanging, "-f")
    assert followed.returncode == 1
    assert followed.stdout.splitlines()[-1] == "■ job cancelled"

    assert cli.ok("jobs", "rm", hanging) == f"Removed {hanging}.\n"
    gone = cli.run("jobs", "show", hanging)
    assert gone.returncode == 1
    assert gone.stderr == f"claude-batch: job {hanging!r} not found\n"


def test_exit_codes(cli_world: CliWorld, fake_anthropic: FakeAnthropic) -> None:
    cli = cli_world.cli
    fake_anthropic.add_script("cli-hang", [Hang()])
    timed_out = cli.run(
        "run", cli_world.repo, f"Hang {marker('cli-hang')}", "--timeout", "2", "--follow"
    )
    assert timed_out.returncode == 1
    assert timed_out.stdout.splitlines()[-1] == "■ job timeout: timed out after 2 s"
    ended = json.loads(cli.ok("jobs", "list", "--json"))[0]
    assert ended["status"] == "timeout"
    failed = cli.run("run", cli_world.repo, f"Fail {marker('bad-request')}", "-f")
    assert failed.returncode == 1
    assert failed.stdout.splitlines()[-1].startswith("■ job failed: ")

    for usage in (
        ["run", cli_world.repo],
        ["run", cli_world.repo, "x", "--image", "/no/such.png"],
        ["run", cli_world.repo, "x", "--max-turns", "0"],
        ["jobs", "list", "--limit", "0"],
        ["no-such-command"],
    ):
        result = cli.run(*usage)
        assert result.returncode == 2, (usage, result.stderr)
        assert "Traceback" not in result.stderr

    refused = cli.run("run", "no-such-repository", "Hello")
    assert refused.returncode == 1
    assert refused.stderr.startswith("claude-batch: ") and len(refused.stderr.splitlines()) == 1
    elsewhere = cli.run("--server", "http://127.0.0.1:9", "whoami")  # the token stays home
    assert elsewhere.returncode == 3
    assert elsewhere.stderr.startswith("claude-batch: not logged in to http://127.0.0.1:9 ")


def test_an_admin_names_the_owner(
    job_world: JobWorldFactory, users: UserFactory, tmp_path: Path
) -> None:
    admins = users.group()
    world = job_world(ADMIN_GROUP=admins)
    alice = world.member()
    admin, own = Cli(world.server, tmp_path / "admin"), Cli(world.server, tmp_path / "alice")
    admin.login(users.create(groups=(admins,)))
    own.login(alice.user)
    try:
        assert alice.repo not in admin.ok("repos", "list")  # an admin's own: none
        assert alice.repo in admin.ok("repos", "list", "--owner", alice.user.name)
        everyone = json.loads(admin.ok("repos", "list", "--owner", "*", "--json"))
        assert (alice.repo, alice.user.name) in {(r["name"], r["registeredBy"]) for r in everyone}
        shown = json.loads(
            admin.ok("repos", "show", alice.repo, "--owner", alice.user.name, "--json")
        )
        assert shown["registeredBy"] == alice.user.name
        job = json.loads(
            admin.ok(
                "run",
                alice.repo,
                f"Hi {marker('hello')}",
                "--owner",
                alice.user.name,
                "-f",
                "--json",
            )
        )
        assert job["status"] == "completed" and job["repository"] == alice.repo

        theirs = own.run("repos", "list", "--owner", "*")  # not an admin: as if nothing
        assert theirs.returncode == 1 and "not found" in theirs.stderr
        assert own.run("run", alice.repo, "x", "--owner", "root").returncode == 1
    finally:
        admin.close()
        own.close()
