"""Bearer tokens: HS256 JWTs with sub, exp, iat and jti; logout revokes the jti for good."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from sqlalchemy import bindparam, delete, select

from claude_batch_server.errors import Unauthenticated
from claude_batch_server.store.db import Database
from claude_batch_server.store.tables import REVOKED_TOKENS, RevokedToken, utcnow

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ["sub", "exp", "iat", "jti"]
# Core, built once: the check runs on every request
_REVOKED = select(REVOKED_TOKENS.c.jti).where(REVOKED_TOKENS.c.jti == bindparam("jti"))


@dataclass(frozen=True)
class Claims:
    sub: str
    jti: str
    expires: datetime


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires: datetime


class TokenService:
    def __init__(self, key: str, lifetime: timedelta, database: Database) -> None:
        self._key = key
        self._lifetime = lifetime
        self._database = database

    def issue(self, username: str) -> IssuedToken:
        now = utcnow().replace(microsecond=0)
        expires = now + self._lifetime
        claims = {"sub": username, "iat": now, "exp": expires, "jti": uuid.uuid4().hex}
        return IssuedToken(jwt.encode(claims, self._key, algorithm=ALGORITHM), expires)

    def verify(self, token: str) -> Claims:
        """The token's claims; Unauthenticated when forged, expired, malformed or revoked."""
        try:
            payload = jwt.decode(
                token, self._key, algorithms=[ALGORITHM], options={"require": REQUIRED_CLAIMS}
            )
        except jwt.PyJWTError as error:
            raise Unauthenticated("invalid or expired token") from error
        if not all(isinstance(payload[c], str) for c in ("sub", "jti")):
            raise Unauthenticated("invalid or expired token")
        claims = Claims(payload["sub"], payload["jti"], datetime.fromtimestamp(payload["exp"], UTC))
        if self._revoked(claims.jti):
            raise Unauthenticated("token has been revoked")
        return claims

    def revoke(self, claims: Claims) -> None:
        with self._database.session() as session:
            session.execute(delete(RevokedToken).where(RevokedToken.expires_at < utcnow()))
            if session.get(RevokedToken, claims.jti) is None:
                session.add(RevokedToken(jti=claims.jti, expires_at=claims.expires))

    def _revoked(self, jti: str) -> bool:
        with self._database.read_connection() as connection:
            return connection.scalar(_REVOKED, {"jti": jti}) is not None
