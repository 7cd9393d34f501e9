"""Code planted in git's configuration never runs as someone else, nor outside the job
that wrote it (issue 12, finding 2).

(a) A user's own `~/.gitconfig` runs during their clone, as them: a smudge filter there
plants `core.fsmonitor`, an `include.path` and hooks into the clone before it is stored.
An admin's job on that repository must run none of it as the admin.
(b) A job writes `.git/config` (fsmonitor, a clean filter) and `.gitattributes`; `GET
/diff`, asked by the user and by an admin after the job ended, runs none of it and still
shows the job's change.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_anthropic import FakeAnthropic, bash, text
from tests.jobs.conftest import JobWorldFactory
from tests.security.conftest import Attacks
from tests.support.api import Api, home_of, make_git_repo
from tests.support.users import UserFactory


@pytest.fixture
def marks() -> Iterator[Path]:
    """A folder every user may write into: each planted command leaves a file named after
    the uid it ran as, and the test looks for them."""
    folder = Path("/tmp") / f"cbs-marks-{secrets.token_hex(6)}"
    folder.mkdir()
    folder.chmod(0o1777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def ran_as(marks: Path) -> set[str]:
    """The uids (and what ran) that left a mark, e.g. {"1003-fsmonitor"}."""
    return {path.name for path in marks.iterdir() if path.name[0].isdigit()}


def evil_script(marks: Path, what: str, *, filter: bool = False) -> Path:
    """A command that leaves `<uid>-<what>` in `marks`: a filter passes its input through,
    anything else reads nothing and fails (an fsmonitor hook that fails is ignored)."""
    script = marks / f"evil-{what}.sh"
    rest = "exec cat" if filter else "exit 1 </dev/null"
    script.write_text(f'#!/bin/sh\ntouch "{marks}/$(id -u)-{what}"\n{rest}\n')
    script.chmod(0o755)
    return script


def plant_through_gitconfig(user_home: Path, owner: Api, marks: Path) -> None:
    """The user's own global configuration: a smudge filter for every file that, as the
    clone checks files out, writes the attack into the new clone's `.git`."""
    fsmonitor = evil_script(marks, "fsmonitor")
    included = marks / "included.config"
    included.write_text(f"[core]\n\tfsmonitor = {evil_script(marks, 'include')}\n")
    hook = evil_script(marks, "hook")
    plant = user_home / "plant.sh"
    plant.write_text(
        "#!/bin/sh\n"
        f'touch "{marks}/planted"\n'
        'for dir in "$PWD" "$PWD"/* "$PWD"/*/*; do\n'
        '  config="$dir/.git/config"\n'
        '  if [ -f "$config" ] && ! grep -q planted "$config"; then\n'
        f'    printf "# planted\\n[core]\\n\\tfsmonitor = {fsmonitor}\\n" >> "$config"\n'
        f'    printf "[include]\\n\\tpath = {included}\\n" >> "$config"\n'
        '    mkdir -p "$dir/.git/hooks"\n'
        "    for name in post-checkout pre-commit post-commit post-index-change; do\n"
        f'      cp {hook} "$dir/.git/hooks/$name"\n'
        "    done\n"
        f'    printf "* filter=evil\\n" > "$dir/.git/info/attributes" 2>/dev/null\n'
        "  fi\n"
        "done\n"
        "cat\n"
    )
    (user_home / "plant.attributes").write_text("* filter=plant\n")
    (user_home / ".gitconfig").write_text(
        f"[core]\n\tattributesFile = {user_home}/plant.attributes\n"
        f'[filter "plant"]\n\tsmudge = {plant}\n'
    )
    for path in (plant, user_home / "plant.attributes", user_home / ".gitconfig"):
        os.chown(path, owner.user.uid, owner.user.uid)
    plant.chmod(0o755)


def test_config_planted_at_registration_never_runs_as_an_admin(
    job_world: JobWorldFactory,
    users: UserFactory,
    fake_anthropic: FakeAnthropic,
    marks: Path,
    attacks: Attacks,
) -> None:
    admins = users.group()
    world = job_world(ADMIN_GROUP=admins, COW_STRATEGY="auto")
    alice = Api(world.server, users.create())
    world.apis.append(alice)
    home = home_of(alice.user)
    plant_through_gitconfig(home, alice, marks)
    source = make_git_repo(home, alice.user)
    repo = f"planted-{alice.user.name}"
    alice.ready_repository(repo, source)
    assert (marks / "planted").exists()  # the user's own filter ran, as the user

    admin = Api(world.server, users.create(groups=(admins,)))
    world.apis.append(admin)
    script = fake_anthropic.add_script(
        f"git-as-admin-{secrets.token_hex(4)}",
        [
            bash(
                "git status --short; git diff --stat; "
                "git -c user.name=a -c user.email=a@example.invalid "
                "commit -q --allow-empty -m probe; git log --oneline -1 > log.txt"
            ),
            text("done"),
        ],
    )
    # ?owner= names alice's repository once names are per user; ignored before that
    response = admin.http.post(
        "/jobs",
        params={"owner": alice.user.name},
        json={"repository": repo, "prompt": f"look {script}"},
    )
    assert response.status_code == 201, response.text
    job = response.json()["jobId"]
    admin.start(job)
    done = admin.wait_ended(job)
    attacks.tried(4)  # fsmonitor, include.path, hooks, info/attributes
    assert done["status"] == "completed", done
    assert not {mark for mark in ran_as(marks) if mark.startswith(f"{admin.user.uid}-")}
    listed = admin.http.get(f"/jobs/{job}/files/content", params={"path": "log.txt"})
    assert "probe" in listed.json()["content"]  # git worked, with the server's config


def test_diff_runs_nothing_a_job_wrote(
    job_world: JobWorldFactory,
    users: UserFactory,
    fake_anthropic: FakeAnthropic,
    marks: Path,
    attacks: Attacks,
) -> None:
    admins = users.group()
    world = job_world(ADMIN_GROUP=admins)
    alice = world.member()
    fsmonitor, clean = evil_script(marks, "fsmonitor"), evil_script(marks, "clean", filter=True)
    textconv = evil_script(marks, "textconv")
    script = fake_anthropic.add_script(
        f"plant-in-workspace-{secrets.token_hex(4)}",
        [
            bash(
                f'printf "[core]\\n\\tfsmonitor = {fsmonitor}\\n'
                f'[filter \\"x\\"]\\n\\tclean = {clean}\\n\\trequired = true\\n'
                f'[diff \\"x\\"]\\n\\ttextconv = {textconv}\\n\\tcommand = {textconv}\\n'
                f'[include]\\n\\tpath = {marks}/included.config\\n" >> .git/config && '
                'printf "* filter=x diff=x\\n" > .gitattributes && mkdir -p .git/info && '
                'printf "* filter=x diff=x\\n" > .git/info/attributes && '
                "mkdir -p .git/hooks && cp /dev/null .git/hooks/pre-commit && "
                'printf "changed by the job\\n" >> README.md && '
                # a repository of its own inside, whose git would run its configuration
                "mkdir sub && cd sub && git init -q && echo x > f && git add f && "
                "git -c user.name=a -c user.email=a@example.invalid commit -qm s && "
                f'printf "[core]\\n\\tfsmonitor = {fsmonitor}\\n'
                f'[filter \\"x\\"]\\n\\tclean = {clean}\\n" >> .git/config && '
                'printf "* filter=x\\n" > .gitattributes && echo y >> f'
            ),
            text("done"),
        ],
    )
    (marks / "included.config").write_text(f"[core]\n\tfsmonitor = {fsmonitor}\n")
    job = alice.run(alice.repo, f"plant {script}")["jobId"]
    assert alice.wait_ended(job)["status"] == "completed"
    nested = alice.http.get(f"/jobs/{job}/files", params={"path": "sub"}).json()
    assert {".git", ".gitattributes", "f"} <= {entry["name"] for entry in nested}, nested
    for path in marks.iterdir():  # what ran inside the job, as the job, was its own business
        if path.name[0].isdigit():
            path.unlink()

    admin = Api(world.server, users.create(groups=(admins,)))
    world.apis.append(admin)
    for asker in (alice, admin):
        response = asker.http.get(f"/jobs/{job}/diff")
        attacks.tried(4)  # fsmonitor, clean filter, diff driver / textconv, include.path
        assert ran_as(marks) == set()
        assert response.status_code == 200, response.text
        assert "+changed by the job" in response.text
        assert "+* filter=x diff=x" in response.text  # the new .gitattributes, as written
