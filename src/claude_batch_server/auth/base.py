"""The Authenticator interface: one module per backend implements it."""

from __future__ import annotations

from typing import Protocol

from claude_batch_server.accounts import Account, ShadowEntry


class Authenticator(Protocol):
    """Finds accounts and checks passwords. Policy (who may log in) is not its business."""

    name: str

    def account(self, username: str) -> Account | None:
        """The account's passwd facts, or None when there is no such account."""

    def shadow(self, username: str) -> ShadowEntry | None:
        """The account's shadow entry, or None when it has none that can be read."""

    def verify_password(self, account: Account, password: str) -> bool:
        """Blocking: True when `password` is the account's password."""
