"""Who may log in: the fixed rules that every backend is held to."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from claude_batch_server.accounts import Account, ShadowEntry

MIN_UID = 1000
HASH_PREFIXES = ("$y$", "$6$", "$5$", "$1$")


@dataclass(frozen=True)
class LoginPolicy:
    allowed_users: frozenset[str]
    allowed_groups: frozenset[str]
    require_shadow: bool  # the shadow backend has nothing to check a password against without it

    def refusal(self, account: Account | None, shadow: ShadowEntry | None) -> str | None:
        """Why this account may not log in, or None when it may."""
        if account is None:
            return "unknown user"
        if account.uid == 0 or account.name == "root":
            return "root is refused"
        if account.uid < MIN_UID:
            return f"uid below {MIN_UID}"
        if shadow is None and self.require_shadow:
            return "no shadow entry"
        if shadow is not None and shadow.locked:
            return "account locked"
        if shadow is not None and shadow.expired():
            return "account expired"
        if not self._listed(account):
            return "not in ALLOWED_USERS or ALLOWED_GROUPS"
        return None

    def _listed(self, account: Account) -> bool:
        if not self.allowed_users and not self.allowed_groups:
            return True
        return account.name in self.allowed_users or bool(
            self.allowed_groups.intersection(account.groups)
        )


def is_stored_hash(password: str, shadow: ShadowEntry | None) -> bool:
    """Hash login: the password is exactly the account's stored crypt string."""
    if shadow is None or not shadow.hash.startswith(HASH_PREFIXES):
        return False
    return hmac.compare_digest(password.encode(), shadow.hash.encode())
