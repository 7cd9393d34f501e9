"""OS account facts: passwd, group and shadow entries, and a cache of them
(`AccountCache`); the one seam to the user database."""

from __future__ import annotations

import grp
import os
import pwd
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

SECONDS_PER_DAY = 86400
SYSTEM_FILES = (Path("/etc/passwd"), Path("/etc/group"), Path("/etc/shadow"))
CACHE_SECONDS = 5.0

T = TypeVar("T")


@dataclass(frozen=True)
class Account:
    """Who a job runs as: the passwd entry plus every group the account belongs to."""

    name: str
    uid: int
    gid: int
    home: Path
    shell: str
    gids: tuple[int, ...]  # primary first, then the supplementary groups
    groups: tuple[str, ...]  # names of `gids`, in the same order where they resolve

    @property
    def supplementary_gids(self) -> tuple[int, ...]:
        return tuple(g for g in self.gids if g != self.gid)


@dataclass(frozen=True)
class ShadowEntry:
    """One line of /etc/shadow; day counts are days since 1970-01-01, None where empty."""

    name: str
    hash: str
    last_change: int | None
    max_days: int | None
    inactive_days: int | None
    expire_day: int | None

    @property
    def locked(self) -> bool:
        """`!` or `*` prefixes lock; an empty hash is no usable password either."""
        return not self.hash or self.hash.startswith(("!", "*"))

    def expired(self, now: float | None = None) -> bool:
        """Account expiry (field 8), or a password past its maximum age plus inactivity (7)."""
        today = int((time.time() if now is None else now) // SECONDS_PER_DAY)
        if self.expire_day is not None and today >= self.expire_day:
            return True
        if self.last_change == 0:
            return True  # the password must be changed before any use
        if None in (self.last_change, self.max_days, self.inactive_days):
            return False
        assert self.last_change is not None and self.max_days is not None
        assert self.inactive_days is not None
        return today > self.last_change + self.max_days + self.inactive_days


def lookup(name: str) -> Account | None:
    """The account called `name` through the system's name service, or None."""
    try:
        entry = pwd.getpwnam(name)
    except (KeyError, ValueError):  # ValueError: a NUL in the name
        return None
    return _account(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, entry.pw_shell)


def lookup_in_file(name: str, passwd_file: Path) -> Account | None:
    """The account called `name` in a passwd-format file (AUTH_BACKEND=shadow)."""
    for fields in _colon_records(passwd_file, 7):
        if fields[0] == name:
            try:
                uid, gid = int(fields[2]), int(fields[3])
            except ValueError:
                return None
            return _account(fields[0], uid, gid, fields[5], fields[6])
    return None


def read_shadow(name: str, shadow_file: Path) -> ShadowEntry | None:
    for fields in _colon_records(shadow_file, 9):
        if fields[0] == name:
            return ShadowEntry(
                name=fields[0],
                hash=fields[1],
                last_change=_day(fields[2]),
                max_days=_day(fields[4]),
                inactive_days=_day(fields[6]),
                expire_day=_day(fields[7]),
            )
    return None


def _account(name: str, uid: int, gid: int, home: str, shell: str) -> Account:
    try:
        gids = tuple(dict.fromkeys([gid, *os.getgrouplist(name, gid)]))
    except OSError:
        gids = (gid,)
    return Account(name, uid, gid, Path(home), shell, gids, tuple(_group_names(gids)))


def _group_names(gids: tuple[int, ...]) -> list[str]:
    names = []
    for gid in gids:
        try:
            names.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return names


def _colon_records(path: Path, width: int) -> list[list[str]]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    records = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= width - 1 and not line.startswith(("#", "+", "-")):
            records.append(fields + [""] * (width - len(fields)))
    return records


def _day(field: str) -> int | None:
    try:
        return int(field)
    except ValueError:
        return None


class AccountCache(Generic[T]):
    """A cache of `read(name)`: a value is kept while none of `files` (passwd, group,
    shadow) changed, and for `seconds` at most.

    Every request checks its caller's account (a lock or an expiry since the token was
    issued refuses it); reading passwd, group and shadow each time costs more than the rest
    of the check. A change to the files (useradd, usermod -L, chage, passwd) is seen at
    once; facts from other sources of the name service (LDAP, say) within `seconds`."""

    def __init__(
        self, read: Callable[[str], T], files: Iterable[Path], seconds: float = CACHE_SECONDS
    ) -> None:
        self._read = read
        self._files = tuple(dict.fromkeys(files))
        self._seconds = seconds
        self._lock = threading.Lock()
        self._entries: dict[str, T] = {}
        self._signature: tuple[tuple[int, int, int] | None, ...] = ()
        self._since = 0.0

    def __call__(self, name: str) -> T:
        signature, now = self._signature_now(), time.monotonic()
        with self._lock:
            if signature != self._signature or now - self._since >= self._seconds:
                self._entries.clear()
                self._signature, self._since = signature, now
            elif name in self._entries:
                return self._entries[name]
        value = self._read(name)
        with self._lock:
            if self._signature == signature:  # else the files changed meanwhile: do not keep
                self._entries[name] = value
        return value

    def cached(self, name: str) -> T | None:
        """What `self(name)` would answer, if it is remembered; else None. Reads nothing but
        the files' status, so the event loop may call it. (A remembered None reads as not
        remembered: the caller asks `self(name)`, which answers it from memory.)"""
        signature, now = self._signature_now(), time.monotonic()
        with self._lock:
            if signature != self._signature or now - self._since >= self._seconds:
                return None
            return self._entries.get(name)

    def _signature_now(self) -> tuple[tuple[int, int, int] | None, ...]:
        return tuple(_file_signature(path) for path in self._files)


def _file_signature(path: Path) -> tuple[int, int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_ino, status.st_mtime_ns, status.st_size
