"""Where the client keeps its login: one file under ~/.config/claude-batch/, mode 0600."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from claude_batch_server.client.errors import USAGE, Failure

SERVER_ENV = "CLAUDE_BATCH_SERVER"


@dataclass(frozen=True)
class Credentials:
    server: str
    user: str
    token: str
    expires: str


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "claude-batch"


def credentials_path() -> Path:
    return config_dir() / "credentials.json"


def load() -> Credentials | None:
    try:
        data = json.loads(credentials_path().read_text())
        return Credentials(
            server=str(data["server"]),
            user=str(data["user"]),
            token=str(data["token"]),
            expires=str(data.get("expires", "")),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise Failure(f"cannot read {credentials_path()}: {error}", USAGE) from None


def save(credentials: Credentials) -> Path:
    """Written whole to a new 0600 file, then renamed: the token is never readable by others,
    not even for a moment, and a crash leaves the old file or the new one."""
    directory = config_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = credentials_path()
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(asdict(credentials), file)
        file.write("\n")
    temporary.replace(path)
    return path


def remove() -> bool:
    try:
        credentials_path().unlink()
    except FileNotFoundError:
        return False
    return True


def normalize(url: str) -> str:
    """`host:port` or a full URL, checked: a server URL is http(s) with a host."""
    url = url.strip()
    url = (url if "://" in url else f"http://{url}").rstrip("/")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as error:
        raise Failure(f"not a server URL: {url} ({error})", USAGE) from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise Failure(f"not a server URL: {url} (http:// or https:// and a host)", USAGE)
    return url


def server_url(option: str | None, saved: Credentials | None) -> str:
    """--server, else $CLAUDE_BATCH_SERVER, else the server of the last login."""
    chosen = option or os.environ.get(SERVER_ENV) or (saved.server if saved else None)
    if not chosen:
        raise Failure(f"no server given: pass --server URL or set {SERVER_ENV}", USAGE)
    return normalize(chosen)
