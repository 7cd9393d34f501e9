"""The services of one app instance, built together in `build_services`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from claude_batch_server.auth.base import Authenticator
from claude_batch_server.auth.pam import PamAuthenticator
from claude_batch_server.auth.policy import LoginPolicy
from claude_batch_server.auth.service import AuthService
from claude_batch_server.auth.shadow import ShadowAuthenticator
from claude_batch_server.auth.throttle import Throttle
from claude_batch_server.auth.tokens import TokenService
from claude_batch_server.health import HealthService
from claude_batch_server.logs import Auditor
from claude_batch_server.settings import AuthBackend, Settings
from claude_batch_server.store.db import Database


@dataclass
class Services:
    settings: Settings
    database: Database
    auditor: Auditor
    auth: AuthService
    health: HealthService

    def close(self) -> None:
        self.database.close()


def authenticator_for(settings: Settings) -> Authenticator:
    if settings.AUTH_BACKEND is AuthBackend.SHADOW:
        return ShadowAuthenticator(settings.PASSWD_FILE, settings.SHADOW_FILE)
    return PamAuthenticator(settings.SHADOW_FILE)


def build_services(settings: Settings, database: Database) -> Services:
    auditor = Auditor(database)
    policy = LoginPolicy(
        allowed_users=frozenset(settings.ALLOWED_USERS),
        allowed_groups=frozenset(settings.ALLOWED_GROUPS),
        require_shadow=settings.AUTH_BACKEND is AuthBackend.SHADOW,
    )
    tokens = TokenService(settings.jwt_key, timedelta(hours=settings.JWT_EXPIRY_HOURS), database)
    auth = AuthService(
        authenticator_for(settings),
        policy,
        Throttle(database),
        tokens,
        auditor,
        admin_group=settings.ADMIN_GROUP,
        allow_hash_login=settings.ALLOW_HASH_LOGIN,
    )
    health = HealthService(database, settings.DATA_DIR, settings.CLAUDE_COMMAND)
    return Services(settings, database, auditor, auth, health)
