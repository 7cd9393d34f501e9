"""`options.branch` and `/patch`: a job's changes leave the server as a commit of its user,
pushed with the user's own rights, or served for `git am`."""

from __future__ import annotations

import pwd
import subprocess
from pathlib import Path

from tests.fake_anthropic import FakeAnthropic, bash, text
from tests.jobs.conftest import JobWorldFactory
from tests.results.support import (
    as_user,
    change_script,
    root_git,
    set_identity,
    settled_result,
)
from tests.support.api import Api, git, home_of, make_git_repo


def bare_copy(api: Api, source: Path, name: str) -> Path:
    """A bare clone of `source` in the user's home, theirs."""
    bare = home_of(api.user) / name
    as_user(api.user, source.parent, "clone", "-q", "--bare", str(source), str(bare))
    return bare


def test_a_completed_job_is_pushed_to_a_bare_repository_as_its_user(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    world = job_world()
    alice = world.member()
    source = home_of(alice.user) / "source-repo"
    bare = bare_copy(alice, source, "shared.git")
    bare.chmod(0o700)  # only alice may write it, or even read it: root does not push
    alice.ready_repository("bare", bare)
    set_identity(alice.user, "Alice Example", "alice@example.invalid")
    start = git(source, "rev-parse", "HEAD")
    marker = change_script(fake_anthropic, plant=True)
    prompt = f"Add a greeting and some data {marker}\n\nKeep it short."

    job = alice.run("bare", prompt, options={"branch": True})
    assert job["options"]["branch"] == f"claude-batch/{job['jobId']}"
    assert alice.wait_ended(job["jobId"])["status"] == "completed"
    result = settled_result(alice, job["jobId"])

    branch = f"claude-batch/{job['jobId']}"
    assert result["pushed"] is True and result["error"] is None, result
    assert result["branch"] == branch
    assert as_user(alice.user, bare, "rev-parse", f"refs/heads/{branch}") == result["commit"]
    author = as_user(alice.user, bare, "log", "-1", "--format=%an <%ae>|%cn|%P|%s", branch)
    assert (
        author
        == f"Alice Example <alice@example.invalid>|Alice Example|{start}|{prompt.splitlines()[0]}"
    )
    body = as_user(alice.user, bare, "log", "-1", "--format=%b", branch)
    assert "Keep it short." in body and job["jobId"] in body
    changed = as_user(alice.user, bare, "diff", "--name-status", start, branch).splitlines()
    assert sorted(changed) == [
        "A\t.gitattributes",
        "A\tdata.bin",
        "A\thello.txt",
        "D\tsrc/app.py",
        "M\tREADME.md",
    ]
    assert as_user(alice.user, bare, "show", f"{branch}:hello.txt") == "hello world"
    assert as_user(alice.user, bare, "rev-parse", "refs/heads/main") == start  # untouched

    # the same change as a patch, which `git am` applies to a fresh clone
    response = alice.http.get(f"/jobs/{job['jobId']}/patch")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/mbox")
    assert b"GIT binary patch" in response.content
    fresh = tmp_path / "fresh"
    root_git(tmp_path, "clone", "-q", str(source), str(fresh))
    root_git(fresh, "am", "-q", stdin=response.content)
    workspace = world.server.data_dir / "workspaces" / job["jobId"]
    assert (fresh / "data.bin").read_bytes() == (workspace / "data.bin").read_bytes()
    assert root_git(fresh, "rev-parse", "HEAD^{tree}") == as_user(
        alice.user, bare, "rev-parse", f"{branch}^{{tree}}"
    )
    assert (
        root_git(fresh, "log", "-1", "--format=%an <%ae>")
        == "Alice Example <alice@example.invalid>"
    )

    # nothing the job planted in its .git ran for the commit, the push or the patch
    ran = home_of(alice.user) / "planted-ran"
    lines = ran.read_text().splitlines() if ran.exists() else []
    assert not [line for line in lines if "cbs-git-" in line], lines  # servergit.borrowed
    # ... while the trap is armed: git run in the workspace's own repository springs it
    probe = "/probe/cbs-git-probe/work/index"
    entry = pwd.getpwnam(alice.user.name)
    subprocess.run(
        ["git", "hash-object", "README.md"],
        cwd=workspace,
        user=entry.pw_uid,
        group=entry.pw_gid,
        extra_groups=[],
        env={"HOME": entry.pw_dir, "PATH": "/usr/bin:/bin", "GIT_INDEX_FILE": probe},
        capture_output=True,
        check=True,
    )
    assert probe in ran.read_text().splitlines()

    # nobody else sees the patch
    mallory = world.member()
    assert mallory.http.get(f"/jobs/{job['jobId']}/patch").status_code == 404


def test_a_push_to_a_working_repository_beside_its_checked_out_branch(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic
) -> None:
    world = job_world()
    bob = world.member()
    source = home_of(bob.user) / "source-repo"  # non-bare, `main` checked out
    start = git(source, "rev-parse", "HEAD")

    job = bob.run(
        bob.repo, f"Change things {change_script(fake_anthropic)}", options={"branch": "feature/x"}
    )
    assert bob.wait_ended(job["jobId"])["status"] == "completed"
    result = settled_result(bob, job["jobId"])

    assert result["pushed"] is True and result["branch"] == "feature/x", result
    assert "pullRequestUrl" not in result or result["pullRequestUrl"] is None
    assert as_user(bob.user, source, "rev-parse", "feature/x") == result["commit"]
    assert as_user(bob.user, source, "rev-parse", "HEAD") == start  # main as it was
    assert as_user(bob.user, source, "status", "--porcelain") == ""  # its work tree too
    # the author: no git identity of bob's own, so user@host
    assert as_user(bob.user, source, "log", "-1", "--format=%an", "feature/x") == bob.user.name
    assert as_user(bob.user, source, "log", "-1", "--format=%ae", "feature/x").startswith(
        f"{bob.user.name}@"
    )

    # a follow-up run pushes again, on top of the first push: a fast-forward
    again = fake_anthropic.add_script(
        f"again-{job['jobId']}", [bash("printf 'again\\n' >> hello.txt"), text("Again.")]
    )
    assert bob.http.post(f"/jobs/{job['jobId']}/resume", json={"prompt": again}).status_code == 202
    assert bob.wait_ended(job["jobId"])["status"] == "completed"
    second = settled_result(bob, job["jobId"])
    assert second["pushed"] is True and second["commit"] != result["commit"], second
    assert as_user(bob.user, source, "rev-parse", "feature/x^") == result["commit"]
    assert as_user(bob.user, source, "show", "feature/x:hello.txt") == "hello world\nagain"

    # names git refuses, an option-like one and the repository's own branch: 400 at once
    for name in ("main", "-x", "a..b", "x.lock", "a//b", "HEAD", "@{-1}", "a b", "x~1"):
        response = bob.http.post(
            "/jobs", json={"repository": bob.repo, "prompt": "p", "options": {"branch": name}}
        )
        assert response.status_code == 400, (name, response.text)
        assert response.json()["detail"]
    # no WEBHOOK_ALLOWED_HOSTS on this server: no per-job webhook at all
    response = bob.http.post(
        "/jobs",
        json={"repository": bob.repo, "prompt": "p", "options": {"webhook": "http://127.0.0.1/"}},
    )
    assert response.status_code == 400 and "WEBHOOK_ALLOWED_HOSTS" in response.json()["detail"]
    assert bob.jobs_in("created") == []


def test_a_refused_push_leaves_the_job_completed_with_the_reason(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic
) -> None:
    world = job_world()
    carol = world.member()
    source = home_of(carol.user) / "source-repo"
    # the branch exists already, with a commit the job's does not descend from
    bare = bare_copy(carol, source, "taken.git")
    elsewhere = home_of(carol.user) / "elsewhere"
    elsewhere.mkdir()
    other = make_git_repo(elsewhere, carol.user, {"other.txt": "x\n"})
    as_user(carol.user, other, "push", "-q", str(bare), "main:refs/heads/taken")
    taken = as_user(carol.user, bare, "rev-parse", "taken")
    carol.ready_repository("taken", bare)
    # carol's, but she may not write it (root may: a push as root would go through)
    locked = bare_copy(carol, source, "locked.git")
    subprocess.run(
        ["chmod", "-R", "a-w", str(locked / "objects"), str(locked / "refs")], check=True
    )
    carol.ready_repository("locked", locked)

    first = carol.run(
        "taken", f"Change {change_script(fake_anthropic)}", options={"branch": "taken"}
    )
    second = carol.run(
        "locked", f"Change {change_script(fake_anthropic)}", options={"branch": "mine"}
    )
    for job in (first, second):
        assert carol.wait_ended(job["jobId"])["status"] == "completed"

    refused = settled_result(carol, first["jobId"])
    assert refused["pushed"] is False and refused["commit"], refused
    assert "fast-forward" in refused["error"]
    assert as_user(carol.user, bare, "rev-parse", "taken") == taken  # never forced
    denied = settled_result(carol, second["jobId"])
    assert denied["pushed"] is False and denied["error"], denied
    assert "unable to create" in denied["error"]  # git: no right to write its objects
    assert "refs/heads/mine" not in root_git(locked, "show-ref")
    assert carol.job(second["jobId"])["status"] == "completed"
