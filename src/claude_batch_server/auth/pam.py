"""AUTH_BACKEND=pam: our own PAM service, with the account check (expiry, locks) on."""

from __future__ import annotations

from pathlib import Path

import pamela

from claude_batch_server import accounts
from claude_batch_server.accounts import Account, ShadowEntry

SERVICE = "claude-batch-server"
FALLBACK_SERVICE = "login"
PAM_DIR = Path("/etc/pam.d")


def service_name(pam_dir: Path = PAM_DIR) -> str:
    """Our own service file decides the failure delay; `login` stands in where it is missing."""
    return SERVICE if (pam_dir / SERVICE).is_file() else FALLBACK_SERVICE


class PamAuthenticator:
    name = "pam"

    def __init__(self, shadow_file: Path, service: str | None = None) -> None:
        self._shadow_file = shadow_file
        self.service = service or service_name()

    def account(self, username: str) -> Account | None:
        return accounts.lookup(username)

    def shadow(self, username: str) -> ShadowEntry | None:
        return accounts.read_shadow(username, self._shadow_file)

    def verify_password(self, account: Account, password: str) -> bool:
        try:
            pamela.authenticate(account.name, password, service=self.service, resetcred=0)
        except pamela.PAMError:
            return False
        return True
