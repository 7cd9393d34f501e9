"""The one settings class: every CONTRACT variable, read from the environment or `.env`."""

from __future__ import annotations

import base64
import os
import re
import secrets
import shlex
import shutil
from collections.abc import Callable
from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated

from pydantic import (
    ByteSize,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from claude_batch_server.jobs import landlock

MIN_JWT_KEY_LENGTH = 32
_PERCENT = re.compile(r"(\d{1,2}(?:\.\d+)?)%")
_SIZE = re.compile(r"(\d{1,15})([KMGT]?)", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
JWT_KEY_FILE = "jwt.key"
_BINARY = ("K", "M", "G", "T")  # suffixes read as powers of 1024
WEBHOOK_KEY_FILE = "webhook.key"


class AuthBackend(StrEnum):
    PAM = "pam"
    SHADOW = "shadow"


class CowStrategy(StrEnum):
    AUTO = "auto"
    BTRFS = "btrfs"
    REFLINK = "reflink"
    OVERLAY = "overlay"
    COPY = "copy"


class SandboxMode(StrEnum):
    AUTO = "auto"  # on where the kernel offers Landlock
    ON = "on"  # refuse to start without it
    OFF = "off"


class ExecutorKind(StrEnum):
    LOCAL = "local"  # jobs run on this host
    SLURM = "slurm"  # each job a Slurm job step, run as its user on the cluster's nodes


# srun options the server sets itself: the job's name (how it is found again), its folder,
# environment, streams and user; SLURM_ARGS may not change them
_SERVER_SRUN_OPTIONS = (
    "-J", "--job-name", "-D", "--chdir", "--export", "-o", "--output", "-e", "--error",
    "-i", "--input", "-u", "--unbuffered", "--pty", "--uid", "--gid", "--mem", "--time",
    "-t", "--cpus-per-task", "-c",
)  # fmt: skip


SLURM_TOOLS = ("srun", "scancel", "squeue", "sinfo", "sstat", "sacct")  # the executor runs


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


def _comma_list(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Configuration of one server process. Built once, in `create_app`, never at import."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=True)

    HOST: str = "0.0.0.0"  # noqa: S104 - the contract's default: serve every interface
    PORT: int = Field(5000, ge=1, le=65535)
    DATA_DIR: Path = Path("/var/lib/claude-batch-server")
    DATABASE_URL: str = ""
    JWT_KEY: SecretStr | None = None
    JWT_EXPIRY_HOURS: float = Field(24, gt=0)
    MAX_CONCURRENT_JOBS: int = Field(5, ge=1)
    MAX_CONCURRENT_JOBS_PER_USER: int = Field(0, ge=0)
    JOB_TIMEOUT_HOURS: float = Field(24, gt=0)
    JOB_RETENTION_DAYS: float = Field(7, ge=0)
    CLAUDE_COMMAND: str = "claude"
    AUTH_BACKEND: AuthBackend = AuthBackend.PAM
    SHADOW_FILE: Path = Path("/etc/shadow")
    PASSWD_FILE: Path = Path("/etc/passwd")
    ALLOWED_USERS: Annotated[list[str], NoDecode] = []
    ALLOWED_GROUPS: Annotated[list[str], NoDecode] = []
    ADMIN_GROUP: str = ""
    ALLOW_HASH_LOGIN: bool = False
    COW_STRATEGY: CowStrategy = CowStrategy.AUTO
    LOG_FORMAT: LogFormat = LogFormat.JSON
    # peers whose X-Forwarded-For is believed: addresses or networks (CIDR); none by default,
    # not even loopback, since every local user connects from there
    TRUSTED_PROXIES: Annotated[list[IPv4Network | IPv6Network], NoDecode] = []
    JOB_MEMORY_MAX: ByteSize | None = None  # None: the machine's memory ÷ MAX_CONCURRENT_JOBS
    JOB_CPUS: float = Field(0, ge=0, le=4096)
    JOB_PIDS_MAX: int = Field(4096, ge=0, le=4_194_304)
    JOB_SANDBOX: SandboxMode = SandboxMode.AUTO
    EXECUTOR: ExecutorKind = ExecutorKind.LOCAL
    JOB_OUTPUT_MAX_MB: int = Field(100, ge=1, le=1024 * 1024)
    DATA_DIR_MIN_FREE: str = "5%"
    JOB_DISK_MAX: str = ""  # empty: DATA_DIR's size ÷ MAX_CONCURRENT_JOBS; 0: no quota
    SLURM_PARTITION: str = Field(
        "", max_length=200, pattern=r"^([A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*)?$"
    )
    SLURM_ARGS: str = Field("", max_length=4000)
    WEBHOOK_URL: str = Field("", max_length=2048, pattern=r"^(https?://[^\x00-\x20\x7f]+)?$")
    WEBHOOK_SECRET: SecretStr | None = None
    WEBHOOK_ALLOWED_HOSTS: Annotated[list[str], NoDecode] = []

    _split_lists = field_validator(
        "ALLOWED_USERS", "ALLOWED_GROUPS", "WEBHOOK_ALLOWED_HOSTS", mode="before"
    )(_comma_list)

    @field_validator("TRUSTED_PROXIES", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        try:
            return [ip_network(item.strip()) for item in value.split(",") if item.strip()]
        except ValueError as error:  # a host name or a network with host bits set
            raise ValueError(f"not an IP address or network: {error}") from None

    @field_validator("JOB_MEMORY_MAX", mode="before")
    @classmethod
    def _binary_units(cls, value: object) -> object:
        """`512M`, `4G` as systemd and docker read them: MiB, GiB."""
        if value == "":
            return None
        if isinstance(value, str) and value.strip()[-1:].upper() in _BINARY:
            return value.strip()[:-1] + value.strip()[-1].upper() + "iB"
        return value

    @field_validator("JWT_KEY", "WEBHOOK_SECRET", mode="before")
    @classmethod
    def _empty_key_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("JWT_KEY")
    @classmethod
    def _key_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_JWT_KEY_LENGTH:
            raise ValueError(f"must be at least {MIN_JWT_KEY_LENGTH} characters")
        return value

    @field_validator("JOB_SANDBOX")
    @classmethod
    def _sandbox_possible(cls, value: SandboxMode) -> SandboxMode:
        if value is SandboxMode.ON and landlock.abi() < 1:
            raise ValueError("on, but this kernel offers no Landlock")
        return value

    @field_validator("SLURM_ARGS")
    @classmethod
    def _srun_arguments(cls, value: str) -> str:
        try:
            arguments = shlex.split(value)
        except ValueError as error:
            raise ValueError(f"not a shell-quoted list of srun arguments: {error}") from None
        if "--" in arguments:  # what follows would run in place of the agent
            raise ValueError("-- ends srun's options: the server puts the agent after it")
        for argument in arguments:
            # --name=value, or -Xvalue (a short option with its value joined)
            name = argument.split("=", 1)[0] if argument.startswith("--") else argument[:2]
            if name in _SERVER_SRUN_OPTIONS:
                raise ValueError(f"{name} is set by the server for every job")
        return value

    @model_validator(mode="after")
    def _slurm_needs_shared_workspaces(self) -> Settings:
        if self.EXECUTOR is not ExecutorKind.SLURM:
            return self
        # an overlay is mounted on this host alone; the nodes would see an empty folder
        if self.COW_STRATEGY is CowStrategy.OVERLAY:
            raise ValueError(
                "COW_STRATEGY=overlay with EXECUTOR=slurm: an overlay mount lives on this host"
                " only; use btrfs, reflink or copy on storage that the nodes share"
            )
        # Landlock confines the processes of this host: a Slurm step starts on its node
        if self.JOB_SANDBOX is SandboxMode.ON:
            raise ValueError(
                "JOB_SANDBOX=on with EXECUTOR=slurm: the sandbox confines the processes of this"
                " host, not a Slurm job step"
            )
        for tool in SLURM_TOOLS:
            if shutil.which(tool) is None:
                raise ValueError(f"EXECUTOR=slurm, but Slurm's {tool} is not on PATH")
        return self

    @field_validator("DATA_DIR_MIN_FREE", "JOB_DISK_MAX")
    @classmethod
    def _free_space(cls, value: str, info: ValidationInfo) -> str:
        if (value or info.field_name != "JOB_DISK_MAX") and not (
            _PERCENT.fullmatch(value) or _SIZE.fullmatch(value)
        ):
            raise ValueError("must be a size such as 2G or 500M, or a percentage below 100%")
        return value

    def min_free_bytes(self, total: int) -> int:
        """DATA_DIR_MIN_FREE in bytes, for a filesystem of `total` bytes."""
        return _bytes_of(self.DATA_DIR_MIN_FREE, total)

    def job_disk_max(self, total: int) -> int:
        """JOB_DISK_MAX in bytes (0: no quota), for a DATA_DIR of `total` bytes."""
        if not self.JOB_DISK_MAX:
            return total // self.MAX_CONCURRENT_JOBS
        return _bytes_of(self.JOB_DISK_MAX, total)

    @field_validator("WEBHOOK_SECRET")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            key = value.get_secret_value().removeprefix("whsec_")
            try:
                raw = base64.b64decode(key, validate=True)
            except ValueError:
                raise ValueError("must be whsec_ followed by base64") from None
            if len(raw) < 24:
                raise ValueError("must hold at least 24 bytes (whsec_ and base64)")
        return value

    @field_validator("DATABASE_URL")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if value and not value.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")):
            raise ValueError("must start with sqlite:// or postgresql://")
        return value

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.DATABASE_URL:
            self.DATABASE_URL = f"sqlite:///{self.DATA_DIR / 'server.db'}"
        return self

    @property
    def slurm_args(self) -> list[str]:
        """SLURM_ARGS as srun's arguments, split as a shell would (checked when read)."""
        return shlex.split(self.SLURM_ARGS)

    @property
    def job_memory_max(self) -> int:
        """Bytes one job may use (0: no limit)."""
        if self.JOB_MEMORY_MAX is not None:
            return int(self.JOB_MEMORY_MAX)
        machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return machine // self.MAX_CONCURRENT_JOBS

    @property
    def jwt_key(self) -> str:
        """The HMAC key: JWT_KEY, or one generated once and kept in DATA_DIR (mode 0600)."""
        if self.JWT_KEY is not None:
            return self.JWT_KEY.get_secret_value()
        return _stored_key(self.DATA_DIR / JWT_KEY_FILE)

    @property
    def webhook_secret(self) -> str:
        """WEBHOOK_SECRET, or one generated once and kept in DATA_DIR (mode 0600): every
        webhook is signed, as the Standard Webhooks specification wants."""
        if self.WEBHOOK_SECRET is not None:
            return self.WEBHOOK_SECRET.get_secret_value()
        return _stored_key(self.DATA_DIR / WEBHOOK_KEY_FILE, _new_webhook_secret)


def _bytes_of(value: str, total: int) -> int:
    """A size (`2G`, `500M`) or a percentage of `total`, in bytes."""
    percent = _PERCENT.fullmatch(value)
    if percent:
        return int(total * float(percent.group(1)) / 100)
    size = _SIZE.fullmatch(value)
    assert size is not None, "checked when read"
    return int(size.group(1)) * _UNITS[size.group(2).upper()]


def _new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _new_jwt_key() -> str:
    return secrets.token_urlsafe(48)


def _stored_key(path: Path, new: Callable[[], str] = _new_jwt_key) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = new()
    # written whole under a name of its own, then linked into place: when several servers
    # start at once, one key wins and the others read it complete, never half written
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(key)
        os.link(temporary, path)
    except FileExistsError:
        return path.read_text().strip()
    finally:
        temporary.unlink()
    return key
