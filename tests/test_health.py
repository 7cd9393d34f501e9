"""GET /health, and the API documents."""

from __future__ import annotations

from pathlib import Path

from tests.support.postgres import PostgresCluster
from tests.support.server import ServerFactory


def test_health_and_docs(server_factory: ServerFactory) -> None:
    server = server_factory()
    with server.client() as client:
        health = client.get("/health")
        assert health.status_code == 200
        assert health.json()["checks"] == {"database": "ok", "storage": "ok", "agent": "ok"}
        assert health.json()["status"] == "ok"
        assert "/auth/login" in client.get("/openapi.json").json()["paths"]
        assert "swagger-ui" in client.get("/swagger").text


def test_health_fails_with_the_database(
    server_factory: ServerFactory, postgres: PostgresCluster
) -> None:
    url = postgres.create_database()
    server = server_factory(DATABASE_URL=url)
    with server.client() as client:
        assert client.get("/health").status_code == 200
        postgres.drop_database(url)
        response = client.get("/health")
        assert response.status_code == 503
        assert response.json()["checks"]["database"].startswith("failing")
        assert response.json()["status"] == "failing"


def test_health_fails_without_the_agent(server_factory: ServerFactory) -> None:
    server = server_factory(CLAUDE_COMMAND="/nonexistent/claude")
    with server.client() as client:
        response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["checks"]["agent"] == "failing: /nonexistent/claude not found"


def test_health_fails_when_jobs_cannot_reach_the_agent(
    server_factory: ServerFactory, open_tmp: Path
) -> None:
    """Root may run it, the jobs' users may not: the check runs it as they would."""
    hidden = open_tmp / "root-only"
    hidden.mkdir(mode=0o700)
    claude = hidden / "claude"
    claude.write_text("#!/bin/sh\necho '2.1.197 (Claude Code)'\n")
    claude.chmod(0o755)
    server = server_factory(CLAUDE_COMMAND=str(claude))
    with server.client() as client:
        response = client.get("/health")
    assert response.status_code == 503
    agent = response.json()["checks"]["agent"]
    assert agent.startswith("failing: as nobody, ") and "Permission denied" in agent
    said = [line for line in server.log().splitlines() if "jobs cannot run the agent" in line]
    assert len(said) == 1 and str(claude) in said[0]


def test_health_fails_when_jobs_cannot_reach_their_workspaces(
    server_factory: ServerFactory, open_tmp: Path
) -> None:
    hidden = open_tmp / "root-only"
    hidden.mkdir(mode=0o700)
    server = server_factory(data_dir=hidden / "data")
    with server.client() as client:
        response = client.get("/health")
    assert response.status_code == 503
    assert "can't cd to" in response.json()["checks"]["agent"]
    assert str(hidden / "data" / "workspaces") in response.json()["checks"]["agent"]
