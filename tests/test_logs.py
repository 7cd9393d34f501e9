"""The audit trail records every login outcome and logout; no secret reaches the log."""

from __future__ import annotations

import json

from sqlalchemy import select

from claude_batch_server.store.db import Database
from claude_batch_server.store.tables import AuditEvent
from tests.conftest import TEST_JWT_KEY
from tests.support.server import ServerFactory
from tests.support.users import UserFactory


def test_audit_trail_and_clean_logs(
    users: UserFactory, server_factory: ServerFactory, database_url: str
) -> None:
    user, locked = users.create(), users.create()
    users.lock(locked.name)
    server = server_factory(DATABASE_URL=database_url)
    with server.client() as client:
        client.post("/auth/login", json={"username": user.name, "password": "wrong-secret-1"})
        client.post("/auth/login", json={"username": locked.name, "password": locked.password})
    token = server.login(user.name, user.password)
    with server.client(token) as client:
        assert client.get("/auth/me", headers={"X-Request-ID": "trace-me-1"}).status_code == 200
        client.post("/auth/logout")

    database = Database(database_url)
    with database.session() as session:
        rows = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
        trail = [(r.user, r.action, r.outcome, r.address) for r in rows]
    database.close()
    assert trail == [
        (user.name, "login", "failed", "127.0.0.1"),
        (locked.name, "login", "refused", "127.0.0.1"),
        (user.name, "login", "success", "127.0.0.1"),
        (user.name, "logout", "success", "127.0.0.1"),
    ]

    log = server.log()
    for secret in [user.password, "wrong-secret-1", locked.password, token, TEST_JWT_KEY]:
        assert secret not in log
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    me = [r for r in records if r.get("path") == "/auth/me"]
    assert me and me[0]["request_id"] == "trace-me-1" and me[0]["user"] == user.name
