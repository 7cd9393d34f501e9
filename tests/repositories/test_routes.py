"""Registering, pulling and removing repositories through the live server."""

from __future__ import annotations

import concurrent.futures
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.api import Api, git, home_of, make_git_repo
from tests.support.server import LiveServer, ServerFactory, wait_for
from tests.support.users import UserFactory


@pytest.fixture
def server(server_factory: ServerFactory) -> LiveServer:
    return server_factory(COW_STRATEGY="copy")


@pytest.fixture
def alice(users: UserFactory, server: LiveServer) -> Iterator[Api]:
    api = Api(server, users.create())
    yield api
    api.close()


def test_register_a_local_repository(alice: Api, server: LiveServer) -> None:
    source = make_git_repo(home_of(alice.user), alice.user)
    head = git(source, "rev-parse", "HEAD")

    response = alice.register("demo", str(source), description="a demo")
    assert response.status_code == 202
    assert response.json()["status"] == "cloning"
    repo = alice.wait_repository("demo")

    assert repo["status"] == "ready", repo
    assert repo["commit"] == head
    assert repo["branch"] == "main"
    assert repo["registeredBy"] == alice.user.name
    assert repo["description"] == "a demo"
    assert repo["size"] > 0 and repo["lastPull"]
    assert [r["name"] for r in alice.http.get("/repositories").json()] == ["demo"]

    (stored,) = (server.data_dir / "repos").iterdir()  # filed under an id, not the name
    assert stored.name != "demo"
    assert (stored / "README.md").read_text() == "# hello\n"
    for path in [stored, stored / "README.md", stored / "src"]:
        info = path.lstat()
        assert info.st_uid == 0, path
        assert not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH), path


def test_a_path_the_user_cannot_read_fails(alice: Api, tmp_path: Path) -> None:
    private = make_git_repo(tmp_path, None)  # root's, under a 0700 folder
    tmp_path.chmod(0o700)
    assert alice.register("secret", str(private)).status_code == 202
    repo = alice.wait_repository("secret")
    assert repo["status"] == "failed"
    assert repo["error"]


def test_a_failing_clone_ends_failed_with_gits_error(alice: Api) -> None:
    assert alice.register("ghost", "/nonexistent/repo.git").status_code == 202
    repo = alice.wait_repository("ghost")
    assert repo["status"] == "failed"
    assert "does not exist" in repo["error"] or "not found" in repo["error"]


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("..", "/tmp/x"),
        (".hidden", "/tmp/x"),
        ("a/b", "/tmp/x"),
        ("x" * 101, "/tmp/x"),
        ("ok", "ext::sh -c touch% /tmp/pwned"),
        ("ok", "--upload-pack=touch /tmp/pwned"),
        ("ok", "ftp://example.invalid/repo"),
        ("ok", "relative/path"),
        ("ok", "https://example.invalid/repo\nmore"),
    ],
)
def test_bad_names_and_urls_are_400(alice: Api, name: str, url: str) -> None:
    response = alice.register(name, url)
    assert response.status_code == 400, response.text
    assert response.json()["detail"]
    assert not Path("/tmp/pwned").exists()


def test_concurrent_registrations_of_one_name_one_wins(alice: Api) -> None:
    source = make_git_repo(home_of(alice.user), alice.user)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: alice.register("race", str(source)).status_code, range(8)))
    assert sorted(codes) == [202] + [409] * 7
    assert alice.wait_repository("race")["status"] == "ready"


def test_pull_fetches_the_latest_commit(alice: Api) -> None:
    source = make_git_repo(home_of(alice.user), alice.user)
    first = alice.ready_repository("pulled", source)["commit"]
    (source / "NEW.md").write_text("new\n")
    git(source, "add", "NEW.md")
    git(source, "commit", "-q", "-m", "second")
    second = git(source, "rev-parse", "HEAD")

    assert alice.http.post("/repositories/pulled/pull").status_code == 202
    wait_for(
        lambda: alice.http.get("/repositories/pulled").json()["commit"] == second, 60, "the pull"
    )
    assert first != second
    assert alice.http.get("/repositories/pulled").json()["status"] == "ready"


def test_other_users_see_404_and_delete(alice: Api, users: UserFactory, server: LiveServer) -> None:
    source = make_git_repo(home_of(alice.user), alice.user)
    alice.ready_repository("mine", source)
    bob = Api(server, users.create())
    try:
        assert bob.http.get("/repositories").json() == []
        for method, path in [
            ("GET", "/repositories/mine"),
            ("POST", "/repositories/mine/pull"),
            ("DELETE", "/repositories/mine"),
        ]:
            assert bob.http.request(method, path).status_code == 404
        assert bob.http.get("/repositories/nothing-here").status_code == 404
    finally:
        bob.close()
    assert alice.http.delete("/repositories/mine").status_code == 204
    assert alice.http.get("/repositories/mine").status_code == 404
    assert list((server.data_dir / "repos").iterdir()) == []


def test_clones_cut_by_a_restart_finish_for_their_own_owner(
    alice: Api, users: UserFactory, server: LiveServer
) -> None:
    bob = Api(server, users.create())
    try:
        commits = {}
        for api in (alice, bob):
            source = make_git_repo(home_of(api.user), api.user, {"who.txt": api.user.name})
            commits[api.user.name] = api.ready_repository("shop", source)["commit"]
        assert len(set(commits.values())) == 2
        server.stop()
        with sqlite3.connect(server.data_dir / "server.db") as db:  # as a cut clone leaves it
            db.execute("""UPDATE repositories SET status = 'cloning', "commit" = NULL""")
        server.start()
        for api in (alice, bob):
            repo = api.wait_repository("shop")
            assert (repo["status"], repo["commit"]) == ("ready", commits[api.user.name])
    finally:
        bob.close()
