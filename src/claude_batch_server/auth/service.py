"""Logging in and out, and turning a bearer token back into a user.

Every failed login looks the same from outside: one 401 body, and an answer that takes
at least `FAILURE_FLOOR` seconds whether the user exists, is refused, or typed a wrong
password, so neither the body nor the timing tells them apart.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import anyio

from claude_batch_server.accounts import Account, AccountCache, ShadowEntry
from claude_batch_server.audit import Auditor
from claude_batch_server.auth.base import Authenticator
from claude_batch_server.auth.callers import Caller
from claude_batch_server.auth.policy import LoginPolicy, is_stored_hash
from claude_batch_server.auth.throttle import Throttle
from claude_batch_server.auth.tokens import Claims, IssuedToken, TokenService
from claude_batch_server.errors import TooManyRequests, Unauthenticated
from claude_batch_server.logs import log
from claude_batch_server.store import reads

FAILURE_FLOOR = 0.4
Facts = tuple[Account | None, ShadowEntry | None]
BAD_LOGIN = "invalid username or password"


@dataclass(frozen=True)
class User:
    """An authenticated caller."""

    account: Account
    admin: bool
    claims: Claims

    @property
    def name(self) -> str:
        return self.account.name


class AuthService:
    def __init__(
        self,
        authenticator: Authenticator,
        policy: LoginPolicy,
        throttle: Throttle,
        tokens: TokenService,
        auditor: Auditor,
        *,
        admin_group: str,
        allow_hash_login: bool,
        account_files: Iterable[Path],
    ) -> None:
        self.authenticator = authenticator
        # a login reads the account afresh; a request's check may use the cache
        self._cached_facts = AccountCache(self._facts, account_files)
        self._policy = policy
        self._throttle = throttle
        self._tokens = tokens
        self._auditor = auditor
        self._admin_group = admin_group
        self._allow_hash_login = allow_hash_login

    async def login(self, username: str, password: str, caller: Caller) -> IssuedToken:
        """Throttled by `caller.key` (a local user's uid), audited with `caller.address`."""
        if "\0" in username:  # no account's name: nothing to check, count or record
            raise Unauthenticated(BAD_LOGIN)
        address = caller.address
        started = time.monotonic()
        admission = await anyio.to_thread.run_sync(self._throttle.admit, username, caller.key)
        if admission.retry_after is not None:
            await self._audit(username, address, "login", "throttled")
            raise TooManyRequests("too many failed logins; try again later", admission.retry_after)
        await anyio.sleep(admission.wait)  # this name's turn: its guesses are serialised
        refusal, verified = await anyio.to_thread.run_sync(self._check, username, password)
        if refusal is None and verified:
            await anyio.to_thread.run_sync(self._throttle.record_success, username, caller.key)
            await self._audit(username, address, "login", "success")
            return self._tokens.issue(username)
        await anyio.to_thread.run_sync(self._throttle.prune)
        await self._audit(username, address, "login", "refused" if refusal else "failed")
        # from the throttle on: what any step costs more for one kind of name stays hidden
        floor = started + admission.wait + FAILURE_FLOOR
        await anyio.sleep(max(0.0, floor - time.monotonic()))
        raise Unauthenticated(BAD_LOGIN)

    def _check(self, username: str, password: str) -> tuple[str | None, bool]:
        """Blocking: (why the account is refused or None, whether the password is right)."""
        if "\0" in username or "\0" in password:
            return "NUL in credentials", False  # no C library below may see one
        account = self.authenticator.account(username)
        shadow = self.authenticator.shadow(username)
        refusal = self._policy.refusal(account, shadow)
        if refusal is not None or account is None:
            return refusal, False
        if self._allow_hash_login and is_stored_hash(password, shadow):
            return None, True
        return None, self.authenticator.verify_password(account, password)

    async def logout(self, user: User, address: str) -> None:
        await anyio.to_thread.run_sync(self._tokens.revoke, user.claims)
        await self._audit(user.name, address, "logout", "success")

    async def authenticate(self, token: str) -> User:
        """The user a bearer token stands for, as long as they may still log in. On the
        event loop from memory when it can (the token's signature, the revocations, the
        account's recent facts); else one trip to a worker thread for what it must read."""
        claims = self._tokens.decode(token)
        revoked = self._tokens.revoked(claims)
        remembered = self._cached_facts.cached(claims.sub)
        if revoked is None or remembered is None:
            revoked, facts = await reads.read(self._read, claims, revoked)
        else:
            facts = remembered
        if revoked:
            raise Unauthenticated("token has been revoked")
        account, shadow = facts
        if self._policy.refusal(account, shadow) or not account:
            raise Unauthenticated("account no longer allowed")
        return User(account, self.is_admin(account), claims)

    def _read(self, claims: Claims, revoked: bool | None) -> tuple[bool, Facts]:
        """Blocking: what `authenticate` could not tell from memory."""
        if revoked is None:
            revoked = self._tokens.revoked_in_database(claims)
        return revoked, self._cached_facts(claims.sub)

    def refresh(self) -> None:
        """Blocking: reads the logouts of other processes (see auth/tokens.py)."""
        self._tokens.refresh()

    async def keep_current(self, every: float) -> None:
        """Refreshes every `every` seconds, for as long as the app runs."""
        while True:
            await anyio.sleep(every)
            try:
                await anyio.to_thread.run_sync(self.refresh)
            except Exception:  # the database may be away for a moment: the next one retries
                log.exception("reading revoked tokens failed")

    def _facts(self, username: str) -> Facts:
        return self.authenticator.account(username), self.authenticator.shadow(username)

    def is_admin(self, account: Account) -> bool:
        return bool(self._admin_group) and self._admin_group in account.groups

    async def _audit(self, user: str, address: str, action: str, outcome: str) -> None:
        await anyio.to_thread.run_sync(
            lambda: self._auditor.record(
                user=user, address=address, action=action, target=user, outcome=outcome
            )
        )
