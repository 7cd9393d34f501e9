"""docs/API.md against what the live server serves: every route and method of its
/openapi.json is in the doc's route table and no other; every Settings variable is in the
doc's (and the README's) variable table and no other; the client's exit codes are all
there. So the reference cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from claude_batch_server.client import errors
from claude_batch_server.settings import Settings
from tests.support.server import REPO_ROOT, ServerFactory

API_DOC = REPO_ROOT / "docs" / "API.md"
README = REPO_ROOT / "README.md"
ROUTE_ROW = re.compile(r"^\| `(GET|POST|PUT|PATCH|DELETE) (/[^`\s]*)` \|", re.MULTILINE)
NAME = re.compile(r"`([A-Z][A-Z0-9_]*)`")
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


def _plain(path: str) -> str:
    """`/jobs/{job_id}` and `/jobs/{id}` alike: parameter names are the doc's to choose."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def _table_rows(section: str) -> list[list[str]]:
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows[2:]]


def _variables(text: str) -> set[str]:
    rows = _table_rows(_section(text, "Configuration"))
    return {name for row in rows for name in NAME.findall(row[0])}


def test_every_route_served_is_documented_and_no_other(server_factory: ServerFactory) -> None:
    with server_factory().client() as client:
        schema = client.get("/openapi.json").json()
    served = {
        (method.upper(), _plain(path))
        for path, operations in schema["paths"].items()
        for method in operations
        if method in HTTP_METHODS
    }
    documented = [(method, _plain(path)) for method, path in ROUTE_ROW.findall(API_DOC.read_text())]
    assert len(documented) == len(set(documented)), "a route is listed twice"
    assert served - set(documented) == set(), "served, but missing from docs/API.md"
    assert set(documented) - served == set(), "in docs/API.md, but not served"
    # pages for browsers stay out of the API document (docs/API.md says so)
    assert not [path for path in schema["paths"] if path == "/" or path.startswith("/ui")]


@pytest.mark.parametrize("document", [API_DOC, README], ids=["API.md", "README.md"])
def test_every_setting_is_documented_and_no_other(document: Path) -> None:
    assert _variables(document.read_text()) == set(Settings.model_fields)


def test_the_client_exit_codes_are_documented() -> None:
    rows = _table_rows(_section(API_DOC.read_text(), "The `claude-batch` client's exit codes"))
    codes = {int(row[0]) for row in rows}
    assert codes == {errors.COMPLETED, errors.NOT_COMPLETED, errors.USAGE, errors.UNREACHABLE}
