"""The link that opens a pull (GitHub) or merge (GitLab) request, from a remote's URL."""

from __future__ import annotations

import pytest

from claude_batch_server.results.branch import pull_request_url


@pytest.mark.parametrize(
    ("git_url", "link"),
    [
        (
            "https://github.com/acme/shop.git",
            "https://github.com/acme/shop/compare/main...claude-batch%2Fab12?expand=1",
        ),
        (
            "git@github.com:acme/shop.git",
            "https://github.com/acme/shop/compare/main...claude-batch%2Fab12?expand=1",
        ),
        (
            "ssh://git@github.com/acme/shop",
            "https://github.com/acme/shop/compare/main...claude-batch%2Fab12?expand=1",
        ),
        (
            "https://token@gitlab.com/group/sub/shop.git",
            "https://gitlab.com/group/sub/shop/-/merge_requests/new?"
            "merge_request%5Bsource_branch%5D=claude-batch%2Fab12"
            "&merge_request%5Btarget_branch%5D=main",
        ),
        (
            "git@gitlab.example.org:team/shop.git",
            "https://gitlab.example.org/team/shop/-/merge_requests/new?"
            "merge_request%5Bsource_branch%5D=claude-batch%2Fab12"
            "&merge_request%5Btarget_branch%5D=main",
        ),
        ("https://bitbucket.org/acme/shop.git", None),
        ("/srv/git/shop.git", None),
        ("file:///srv/git/shop.git", None),
        ("https://github.com/shop.git", None),  # no owner: not a repository page
    ],
)
def test_the_link_for_each_host(git_url: str, link: str | None) -> None:
    assert pull_request_url(git_url, "claude-batch/ab12", "main") == link
