"""AUTH_BACKEND=shadow: read SHADOW_FILE and PASSWD_FILE ourselves, verify with libxcrypt."""

from __future__ import annotations

from pathlib import Path

from claude_batch_server import accounts
from claude_batch_server.accounts import Account, ShadowEntry
from claude_batch_server.auth import xcrypt


class ShadowAuthenticator:
    name = "shadow"

    def __init__(self, passwd_file: Path, shadow_file: Path) -> None:
        self._passwd_file = passwd_file
        self._shadow_file = shadow_file

    def account(self, username: str) -> Account | None:
        return accounts.lookup_in_file(username, self._passwd_file)

    def shadow(self, username: str) -> ShadowEntry | None:
        return accounts.read_shadow(username, self._shadow_file)

    def verify_password(self, account: Account, password: str) -> bool:
        entry = self.shadow(account.name)
        return entry is not None and not entry.locked and xcrypt.verify(password, entry.hash)
