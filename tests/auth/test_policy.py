"""Who may log in, decided by the rules every backend is held to, called directly."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from claude_batch_server.accounts import Account, ShadowEntry
from claude_batch_server.auth.policy import LoginPolicy, is_stored_hash

TODAY = int(time.time() // 86400)
HASH = "$y$j9T$salt$hashhashhashhashhashhashhashhashhashhash"
ALICE = Account("alice", 1500, 1500, Path("/home/alice"), "/bin/sh", (1500, 27), ("alice", "sudo"))
GOOD = ShadowEntry("alice", HASH, TODAY - 10, 99999, None, None)
OPEN = LoginPolicy(frozenset(), frozenset(), require_shadow=False)


def test_an_ordinary_account_may_log_in() -> None:
    assert OPEN.refusal(ALICE, GOOD) is None
    assert OPEN.refusal(replace(ALICE, uid=1000), GOOD) is None  # the first uid allowed


@pytest.mark.parametrize(
    ("account", "why"),
    [
        (None, "unknown user"),
        (replace(ALICE, uid=0), "root is refused"),
        (replace(ALICE, name="root"), "root is refused"),  # root by name, whatever its uid
        (replace(ALICE, uid=999), "uid below 1000"),  # system accounts
        (replace(ALICE, uid=1), "uid below 1000"),
    ],
)
def test_root_system_and_unknown_accounts_are_refused(account: Account | None, why: str) -> None:
    assert OPEN.refusal(account, GOOD) == why
    # no list of allowed users lets them in
    listed = LoginPolicy(frozenset({"alice", "root"}), frozenset({"sudo"}), require_shadow=False)
    assert listed.refusal(account, GOOD) == why


@pytest.mark.parametrize("stored", ["!" + HASH, "!", "*", "!!", ""])
def test_a_locked_account_is_refused(stored: str) -> None:
    # usermod -L puts "!" before the hash; "*" and an empty field are no usable password
    assert OPEN.refusal(ALICE, replace(GOOD, hash=stored)) == "account locked"


@pytest.mark.parametrize(
    "shadow",
    [
        replace(GOOD, expire_day=TODAY - 1),  # chage -E: the account expired yesterday
        replace(GOOD, expire_day=1),
        replace(GOOD, last_change=0),  # passwd -e: must change the password first
        # chage -M 30 -I 5: a password last changed 40 days ago is past its grace period
        replace(GOOD, last_change=TODAY - 40, max_days=30, inactive_days=5),
    ],
)
def test_an_expired_account_is_refused(shadow: ShadowEntry) -> None:
    assert OPEN.refusal(ALICE, shadow) == "account expired"


@pytest.mark.parametrize(
    "shadow",
    [
        replace(GOOD, expire_day=TODAY + 30),
        # past its maximum age but within the inactivity period: still usable
        replace(GOOD, last_change=TODAY - 32, max_days=30, inactive_days=5),
        # an old password without an inactivity period never locks the account by itself
        replace(GOOD, last_change=TODAY - 400, max_days=30, inactive_days=None),
        replace(GOOD, last_change=None, max_days=None, inactive_days=None, expire_day=None),
    ],
)
def test_an_account_not_yet_expired_may_log_in(shadow: ShadowEntry) -> None:
    assert OPEN.refusal(ALICE, shadow) is None


def test_expiry_counts_whole_days() -> None:
    day = 20_000 * 86400
    entry = replace(GOOD, expire_day=20_000)
    assert not entry.expired(now=day - 1)  # the day before
    assert entry.expired(now=day)  # from the first second of the day it names


def test_the_shadow_backend_refuses_an_account_without_a_shadow_entry() -> None:
    strict = LoginPolicy(frozenset(), frozenset(), require_shadow=True)
    assert strict.refusal(ALICE, None) == "no shadow entry"
    assert strict.refusal(ALICE, GOOD) is None
    assert OPEN.refusal(ALICE, None) is None  # PAM checks the password itself


def test_allowed_users_and_groups_let_in_only_whom_they_name() -> None:
    bob = replace(ALICE, name="bob", gids=(1501,), groups=("bob",))
    by_name = LoginPolicy(frozenset({"alice"}), frozenset(), require_shadow=False)
    by_group = LoginPolicy(frozenset(), frozenset({"sudo"}), require_shadow=False)
    either = LoginPolicy(frozenset({"bob"}), frozenset({"sudo"}), require_shadow=False)

    assert by_name.refusal(ALICE, GOOD) is None
    assert by_name.refusal(bob, GOOD) == "not in ALLOWED_USERS or ALLOWED_GROUPS"
    assert by_group.refusal(ALICE, GOOD) is None  # a supplementary group counts
    assert by_group.refusal(bob, GOOD) == "not in ALLOWED_USERS or ALLOWED_GROUPS"
    assert either.refusal(ALICE, GOOD) is None
    assert either.refusal(bob, GOOD) is None


def test_a_listed_user_is_still_held_to_the_other_rules() -> None:
    listed = LoginPolicy(frozenset({"alice"}), frozenset(), require_shadow=False)
    assert listed.refusal(ALICE, replace(GOOD, hash="!" + HASH)) == "account locked"
    assert listed.refusal(ALICE, replace(GOOD, expire_day=TODAY - 1)) == "account expired"


@pytest.mark.parametrize("stored", [HASH, "$6$salt$hash", "$5$salt$hash", "$1$salt$hash"])
def test_hash_login_takes_exactly_the_stored_crypt_string(stored: str) -> None:
    shadow = replace(GOOD, hash=stored)
    assert is_stored_hash(stored, shadow)
    assert not is_stored_hash(stored[:-1], shadow)
    assert not is_stored_hash(stored + "x", shadow)
    assert not is_stored_hash("", shadow)


@pytest.mark.parametrize(
    "stored",
    [
        "!" + HASH,  # locked
        "*",
        "",
        "abJnggxhB/yWI",  # DES: no prefix, and trivially short
        "$2b$10$bcryptbcryptbcryptbcryptbcryptbcryptbcryptbcryptbcrypt",  # not one we know
    ],
)
def test_hash_login_refuses_anything_but_a_known_hash(stored: str) -> None:
    assert not is_stored_hash(stored, replace(GOOD, hash=stored))
    assert not is_stored_hash(HASH, None)
