"""Real OS users for the tests: made with useradd, removed afterwards whatever happens."""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass, field
from datetime import date

import bcrypt

# How each hash method is set: chpasswd for the ones it knows, usermod -p for the rest.
CHPASSWD_METHODS = {"yescrypt": "YESCRYPT", "sha512": "SHA512"}
OPENSSL_METHODS = {"sha256": "-5", "md5": "-1"}


@dataclass
class OsUser:
    name: str
    password: str
    uid: int
    groups: list[str] = field(default_factory=list)

    def shadow_hash(self) -> str:
        return _shadow_fields(self.name)[1]


def _run(*args: str, stdin: str | None = None) -> str:
    result = subprocess.run(args, input=stdin, capture_output=True, text=True, check=True)
    return result.stdout


def _shadow_fields(name: str) -> list[str]:
    for line in _run("getent", "shadow", name).splitlines():
        return line.split(":")
    raise LookupError(name)


def hash_password(password: str, method: str) -> str:
    if method in OPENSSL_METHODS:
        return _run("openssl", "passwd", OPENSSL_METHODS[method], password).strip()
    if method == "bcrypt":
        return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
    raise ValueError(method)


def running_processes(name: str) -> list[str]:
    """`pid args` of each process of user `name` that still runs. Not zombies: they hold
    nothing, and one may be a removed test user's, whose uid the next user got, before
    init reaped it."""
    listed = subprocess.run(
        ["ps", "-u", name, "-o", "pid=,stat=,args="], capture_output=True, text=True, check=False
    )
    running = []
    for line in listed.stdout.splitlines():
        pid, state, *args = line.split(None, 2)
        if not state.startswith("Z"):
            running.append(" ".join([pid, *args]))
    return running


class UserFactory:
    """`create()` makes a user; `cleanup()` removes every user it made."""

    def __init__(self) -> None:
        self.made: list[str] = []
        self.groups: list[str] = []

    def create(
        self,
        *,
        method: str = "yescrypt",
        system: bool = False,
        groups: tuple[str, ...] = (),
        home: bool = True,
    ) -> OsUser:
        name = f"cbt{secrets.token_hex(4)}"
        password = f"pw-{secrets.token_urlsafe(12)}"
        args = ["useradd", "--shell", "/bin/bash", "-m" if home else "-M"]
        if system:
            args.append("--system")
        if groups:
            args += ["-G", ",".join(groups)]
        _run(*args, name)
        self.made.append(name)
        self.set_password(name, password, method)
        uid = int(_run("id", "-u", name))
        # a new account may get the uid of a deleted one: what that one left is not ours
        subprocess.run(["pkill", "-9", "-u", str(uid)], capture_output=True, check=False)
        return OsUser(name, password, uid, list(groups))

    def set_password(self, name: str, password: str, method: str) -> None:
        if method in CHPASSWD_METHODS:
            _run("chpasswd", "-c", CHPASSWD_METHODS[method], stdin=f"{name}:{password}\n")
        else:
            _run("usermod", "-p", hash_password(password, method), name)

    def group(self) -> str:
        name = f"cbg{secrets.token_hex(4)}"
        _run("groupadd", name)
        self.groups.append(name)
        return name

    def lock(self, name: str) -> None:
        _run("usermod", "-L", name)

    def expire(self, name: str) -> None:
        """Account expiry (shadow field 8) in the past."""
        _run("chage", "-E", "2000-01-01", name)

    def make_inactive(self, name: str) -> None:
        """A password past its maximum age and its inactivity period (shadow field 7)."""
        long_ago = date(2001, 1, 1).isoformat()
        _run("chage", "-d", long_ago, "-M", "30", "-I", "5", name)

    def delete(self, name: str) -> None:
        subprocess.run(["pkill", "-9", "-u", name], capture_output=True, check=False)
        subprocess.run(["userdel", "-r", "-f", name], capture_output=True, check=False)
        if name in self.made:
            self.made.remove(name)

    def cleanup(self) -> None:
        for name in list(self.made):
            self.delete(name)
        for group in self.groups:
            subprocess.run(["groupdel", group], capture_output=True, check=False)
        self.groups.clear()
