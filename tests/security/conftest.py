"""The security suite: each test counts the attacks it tries; the suite ends with one line
saying how many were tried and whether any got through (the hooks in tests/conftest.py,
which pytest-xdist's controlling process loads)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fake_anthropic.fixtures import fake_anthropic
from tests.jobs.conftest import job_world

__all__ = ["fake_anthropic", "job_world"]


class Attacks:
    """`attacks.tried()` once per attempt; a failing assertion afterwards is a breach."""

    def __init__(self) -> None:
        self.count = 0

    def tried(self, n: int = 1) -> None:
        self.count += n


@pytest.fixture
def attacks(request: pytest.FixtureRequest) -> Iterator[Attacks]:
    counter = Attacks()
    yield counter
    # the summary (tests/conftest.py) adds them up, also from the processes of pytest-xdist
    request.node.user_properties.append(("attacks", counter.count))
