"""The security suite: each test counts the attacks it tries; the suite ends with one line
saying how many were tried and whether any got through."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fake_anthropic.fixtures import fake_anthropic
from tests.jobs.conftest import job_world

__all__ = ["fake_anthropic", "job_world"]

TRIED: list[int] = []
BREACHES: list[str] = []


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
    # carried by the test's report, so that the count reaches the summary also from the
    # processes of a distributed run (pytest-xdist)
    request.node.user_properties.append(("attacks", counter.count))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed and "tests/security/" in report.nodeid:
        BREACHES.append(report.nodeid)
    if report.when == "teardown":
        TRIED.extend(count for name, count in report.user_properties if name == "attacks")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TRIED:
        return
    verdict = "none got through" if not BREACHES else f"{len(BREACHES)} tests failed"
    terminalreporter.write_line(f"security suite: {sum(TRIED)} attacks tried, {verdict}")
