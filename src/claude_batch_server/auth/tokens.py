"""Bearer tokens: HS256 JWTs with sub, exp, iat and jti; logout revokes the jti for good.

Every request checks its token against the revocations, so they are kept in memory
(`Revocations`): a logout is refused at once in the process that took it, and every
process reads the others' logouts from the database once per `refresh` (the app calls it
every dispatch tick). Should refreshing stop, or the revocations outgrow `MAX_CACHED`,
the check asks the database again, as it would without the copy.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from sqlalchemy import bindparam, delete, select

from claude_batch_server.errors import Unauthenticated
from claude_batch_server.store.db import Database
from claude_batch_server.store.tables import REVOKED_TOKENS, RevokedToken, UTCDateTime, utcnow

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ["sub", "exp", "iat", "jti"]
MAX_CACHED = 200_000  # revoked tokens kept in memory (~150 bytes each), at most
FULL_LOAD_EVERY = 60.0  # seconds between loads of all (what expired is forgotten)
# a revocation is read again for this long after its time: a transaction that took
# longer to commit, or a clock this far behind another process's, could be missed
OVERLAP = timedelta(seconds=60)
# Core, built once: the check runs on every request
_REVOKED = select(REVOKED_TOKENS.c.jti).where(REVOKED_TOKENS.c.jti == bindparam("jti"))
_LIVE = select(REVOKED_TOKENS.c.jti, REVOKED_TOKENS.c.expires_at).where(
    REVOKED_TOKENS.c.expires_at > bindparam("now", type_=UTCDateTime)
)
_SINCE = select(REVOKED_TOKENS.c.jti, REVOKED_TOKENS.c.expires_at).where(
    REVOKED_TOKENS.c.revoked_at >= bindparam("since", type_=UTCDateTime)
)


@dataclass(frozen=True)
class Claims:
    sub: str
    jti: str
    expires: datetime


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires: datetime


class Revocations:
    """The revoked token ids, in memory, as current as the last `refresh` and this
    process's own logouts (`add`). `known` may be called from the event loop; `refresh`
    and `add` are called from worker threads."""

    def __init__(self, stale_after: float) -> None:
        self._stale_after = stale_after
        self._lock = threading.Lock()
        self._ids: dict[str, datetime] = {}  # jti: when the token expires
        self._own: dict[str, tuple[datetime, float]] = {}  # ours, until a full load has them
        self._current_until = 0.0  # monotonic; 0: never loaded, or too many to keep
        self._since: datetime | None = None  # the next refresh reads from here
        self._full_at = -FULL_LOAD_EVERY
        self._too_many = False

    def known(self, jti: str) -> bool | None:
        """Whether the token is revoked; None when the copy cannot tell (ask the database)."""
        if jti in self._ids:
            return True
        return False if time.monotonic() < self._current_until else None

    def add(self, jti: str, expires: datetime) -> None:
        """A revocation committed by this process."""
        with self._lock:
            self._ids[jti] = expires
            self._own[jti] = (expires, time.monotonic())

    def refresh(self, database: Database) -> None:
        """Blocking: reads what was revoked since the last refresh, or all of it now and
        then (what expired is forgotten then). Too many to keep: tried again only at the
        next full load's time, the database answering each check meanwhile."""
        started, now = time.monotonic(), utcnow()
        due = started - self._full_at >= FULL_LOAD_EVERY
        if self._too_many and not due:
            return
        full = self._since is None or due
        query, params = (_LIVE, {"now": now}) if full else (_SINCE, {"since": self._since})
        with database.read_connection() as connection:
            rows: dict[str, datetime] = dict(
                connection.execute(query.limit(MAX_CACHED + 1), params).all()
            )
        with self._lock:
            if full:
                self._replace(rows, started)
            else:
                self._ids.update(rows)
            self._since = now - OVERLAP
            self._too_many = len(self._ids) > MAX_CACHED
            if self._too_many:
                self._ids, self._since, self._current_until = {}, None, 0.0
            else:
                self._current_until = started + self._stale_after

    def _replace(self, rows: dict[str, datetime], started: float) -> None:
        # a logout of ours that committed after the read began is not in `rows`
        rows.update((jti, expires) for jti, (expires, _) in self._own.items())
        self._own = {jti: mark for jti, mark in self._own.items() if mark[1] >= started}
        self._ids, self._full_at = rows, started


class TokenService:
    def __init__(
        self, key: str, lifetime: timedelta, database: Database, stale_after: float
    ) -> None:
        """`stale_after`: seconds after a refresh when the copy of the revocations is no
        longer trusted, and each check asks the database."""
        self._key = key
        self._lifetime = lifetime
        self._database = database
        self._revocations = Revocations(stale_after)

    def issue(self, username: str) -> IssuedToken:
        now = utcnow().replace(microsecond=0)
        expires = now + self._lifetime
        claims = {"sub": username, "iat": now, "exp": expires, "jti": uuid.uuid4().hex}
        return IssuedToken(jwt.encode(claims, self._key, algorithm=ALGORITHM), expires)

    def decode(self, token: str) -> Claims:
        """The token's claims, without the revocation check: Unauthenticated when forged,
        expired or malformed. Pure computation: the event loop may call it."""
        try:
            payload = jwt.decode(
                token, self._key, algorithms=[ALGORITHM], options={"require": REQUIRED_CLAIMS}
            )
        except jwt.PyJWTError as error:
            raise Unauthenticated("invalid or expired token") from error
        if not all(isinstance(payload[c], str) for c in ("sub", "jti")):
            raise Unauthenticated("invalid or expired token")
        return Claims(payload["sub"], payload["jti"], datetime.fromtimestamp(payload["exp"], UTC))

    def revoked(self, claims: Claims) -> bool | None:
        """From memory: whether the token is revoked, or None when only the database can
        tell (`revoked_in_database`)."""
        return self._revocations.known(claims.jti)

    def revoked_in_database(self, claims: Claims) -> bool:
        """Blocking."""
        with self._database.read_connection() as connection:
            return connection.scalar(_REVOKED, {"jti": claims.jti}) is not None

    def revoke(self, claims: Claims) -> None:
        with self._database.session() as session:
            session.execute(delete(RevokedToken).where(RevokedToken.expires_at < utcnow()))
            if session.get(RevokedToken, claims.jti) is None:
                session.add(RevokedToken(jti=claims.jti, expires_at=claims.expires))
        self._revocations.add(claims.jti, claims.expires)  # committed: refused from now on

    def refresh(self) -> None:
        """Blocking: reads the revocations of other processes."""
        self._revocations.refresh(self._database)
