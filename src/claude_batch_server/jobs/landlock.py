"""Landlock, the kernel's unprivileged sandbox, for the write side only: a process that
calls `restrict_writes(paths)` (and everything it starts from then on) may create, change,
rename or remove files only beneath those paths; reading and executing stay as its uid
allows.

The three system calls are made with ctypes: the module is imported by the spawner, which
is standard library only (see its docstring), and Landlock's interface is small and
stable. Rights are named by the ABI version that brought them, and only those the running
kernel knows are asked for: ABI 1 the basic ones, 2 REFER (moving a file between
directories, denied outright under ABI 1), 3 TRUNCATE. Later ABIs add rights this sandbox
does not restrict (device ioctls, networking, scopes, logging).
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Iterable
from typing import TypedDict

# the same numbers on every architecture (they were added after the tables were unified)
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
PR_SET_NO_NEW_PRIVS = 38

WRITE_FILE = 1 << 1
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13
TRUNCATE = 1 << 14
WRITES_BY_ABI = {  # the write rights each ABI version added
    1: WRITE_FILE
    | REMOVE_DIR
    | REMOVE_FILE
    | MAKE_CHAR
    | MAKE_DIR
    | MAKE_REG
    | MAKE_SOCK
    | MAKE_FIFO
    | MAKE_BLOCK
    | MAKE_SYM,
    2: REFER,
    3: TRUNCATE,
}
FILE_RIGHTS = WRITE_FILE | TRUNCATE  # the only write rights a rule on a non-directory takes


class Confinement(TypedDict):
    writable: list[str]  # beneath these only
    make: list[str]  # folders made first (as the job's user) if missing, to be writable


class LandlockError(OSError):
    """The sandbox could not be set up."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # packed in the kernel's header
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def abi(libc: ctypes.CDLL | None = None) -> int:
    """The Landlock ABI version the kernel offers; 0 when it offers none (too old, or
    Landlock not among the active security modules)."""
    libc = libc or _libc()
    version = libc.syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION)
    return max(int(version), 0)


def write_rights(version: int) -> int:
    return sum(rights for added, rights in WRITES_BY_ABI.items() if added <= version)


def confine(confinement: Confinement) -> int:
    """In the job's first process, as its user, before exec: makes the folders that are to
    be writable and restricts writes to them; returns the ABI version used."""
    for path in confinement["make"]:
        try:
            os.mkdir(path, 0o700)  # noqa: PTH102 - pathlib costs the spawner an import
        except OSError:  # there already, or cannot be: then it is not writable
            continue
    return restrict_writes(confinement["writable"])


def restrict_writes(writable: Iterable[str]) -> int:
    """From now on this process and its descendants write only beneath `writable` (paths
    that do not exist, or that the caller cannot reach, are left out); returns the ABI
    version used. Sets no_new_privs, as
    Landlock requires of an unprivileged caller: no setuid program raises the job again."""
    libc = _libc()
    version = abi(libc)
    if version < 1:
        raise LandlockError(errno.EOPNOTSUPP, "Landlock is not available")
    handled = write_rights(version)
    attr = _RulesetAttr(handled)
    ruleset = _check(libc.syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.sizeof(attr), 0))
    try:
        for path in writable:
            _allow(libc, ruleset, path, handled)
        _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
        _check(libc.syscall(_RESTRICT_SELF, ruleset, 0))
    finally:
        os.close(ruleset)
    return version


def _allow(libc: ctypes.CDLL, ruleset: int, path: str, handled: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except (FileNotFoundError, PermissionError):  # not there, or out of the user's reach
        return
    try:
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        rule = _PathBeneathAttr(handled if is_dir else handled & FILE_RIGHTS, fd)
        _check(libc.syscall(_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0))
    finally:
        os.close(fd)


def _check(result: int) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise LandlockError(code, os.strerror(code))
    return result
