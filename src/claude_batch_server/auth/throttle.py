"""Login throttling, kept in the database so that every process, and a restart, agree.

A stranger must not lock anyone out, and no number of callers may guess one password
faster than a fixed rate. A caller is who auth/callers.py says: a caller on this host is
its OS user ("uid:1001", however many of 127.0.0.0/8's addresses it uses), one from
elsewhere its address (a trusted proxy's X-Forwarded-For). Three kinds of row in
`login_throttles`:

* `address` (the caller): its failures, whatever the name. Past `per_address` in the
  window, that caller is refused (429) for a period that doubles up to an hour. It only
  ever stops the caller that failed: a local user's failures block that user alone.
* `user`: password checks of one name. The first `free` failures in the window are checked
  at once; after them, the name's checks are serialised: each takes the next slot,
  `interval` after the one before, and waits for it (slowed, not refused). However many
  callers guess, the name's password is checked at most once per `interval`; only a
  wait longer than `max_wait` (a queue full of guesses) is refused with 429.
* `pair` (caller and name): a caller has at most one check of a name waiting for its
  slot, so that one caller cannot fill the queue ahead of everyone else.

What holds, then. A name's password is checked at most `free` times per `window`, plus
once per `interval` (5 + 180 in 15 minutes), whoever and however many guess. Its queue
holds at most one waiting guess per caller: one per local account attacking, one per
remote address. The right password from a caller that has not failed waits for at most
as many slots as there are callers ahead of it (never refused while fewer than
`max_wait / interval`, 12, others wait), and one caller's failures never refuse another.

What does not hold. Twelve local accounts working together (or twelve remote addresses,
cheap in IPv6) can keep a name's queue full, and its owner then gets 429 like them; the
bound is on each account, not on their number. A caller forwarded by a trusted proxy is
the address in its X-Forwarded-For: trust a proxy on loopback (TRUSTED_PROXIES=127.0.0.1)
and every local user may connect from there and name any address (the compose file keeps
its nginx in a network of its own). A loopback caller whose socket cannot be found (it
hung up) is refused rather than guessed at.

An attempt is counted when it is admitted, so that concurrent ones cannot all pass as the
first; a right password gives its count back.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from claude_batch_server.store.db import Database
from claude_batch_server.store.tables import LoginThrottle, utcnow

PRUNE_BATCH = 1000  # stale rows forgotten per failure, at most


@dataclass(frozen=True)
class Limits:
    per_address: int = 20
    free: int = 5  # failures of a name checked at once, before its checks are serialised
    interval: timedelta = timedelta(seconds=5)  # between two checks of a name, after that
    max_wait: timedelta = timedelta(seconds=60)
    window: timedelta = timedelta(minutes=15)  # a count is forgotten this long after its last
    first_block: timedelta = timedelta(minutes=1)
    max_block: timedelta = timedelta(hours=1)


@dataclass(frozen=True)
class Admission:
    """May the password be checked: after `wait` seconds, or not now (`retry_after`)."""

    wait: float = 0.0
    retry_after: int | None = None


class Throttle:
    def __init__(self, database: Database, limits: Limits | None = None) -> None:
        self._database = database
        self.limits = limits or Limits()

    def admit(self, username: str, caller: str) -> Admission:
        try:
            return self._admit(username, caller)
        except IntegrityError:  # another process inserted the same first row: once more
            return self._admit(username, caller)

    def _admit(self, username: str, caller: str) -> Admission:
        with self._database.session() as session:
            # always the same order of rows, so that two processes never deadlock
            by_address = self._row(session, "address", caller)
            pair = self._row(session, "pair", _pair(username, caller))
            name = self._row(session, "user", username)
            # the time is read once the rows are ours: an admission that waited for them
            # is later than the one that held them, never earlier
            now = utcnow()
            for row in (by_address, pair, name):
                self._forget_if_old(row, now)
            for row in (by_address, pair):
                if row.blocked_until is not None and row.blocked_until > now:
                    return Admission(retry_after=_seconds(row.blocked_until - now))
            slot = now
            if name.failures >= self.limits.free:
                slot = max(now, name.blocked_until or now)
                if slot - now > self.limits.max_wait:
                    return Admission(retry_after=_seconds(slot - now - self.limits.max_wait))
                name.blocked_until = slot + self.limits.interval
                pair.blocked_until = slot
            for row in (by_address, pair, name):
                row.failures += 1
                row.last_failure = now
            if by_address.failures >= self.limits.per_address:
                doublings = by_address.failures - self.limits.per_address
                block = min(self.limits.first_block * 2**doublings, self.limits.max_block)
                by_address.blocked_until = now + block
            return Admission(wait=(slot - now).total_seconds())

    def _row(self, session: Session, scope: str, key: str) -> LoginThrottle:
        row = session.get(LoginThrottle, (scope, key), with_for_update=True)
        if row is None:
            row = LoginThrottle(scope=scope, key=key, failures=0, last_failure=utcnow())
            session.add(row)
            session.flush()
        return row

    def _forget_if_old(self, row: LoginThrottle, now: datetime) -> None:
        if now - row.last_failure > self.limits.window:
            row.failures = 0
            if row.blocked_until is not None and row.blocked_until <= now:
                row.blocked_until = None

    def record_success(self, username: str, caller: str) -> None:
        """The password was right: give back the count its admission took."""
        with self._database.session() as session:
            for scope, key in (("address", caller), ("user", username)):
                row = session.get(LoginThrottle, (scope, key), with_for_update=True)
                if row is not None:
                    row.failures = max(row.failures - 1, 0)

    def prune(self) -> None:
        """Forget what no longer counts; called after a wrong password (its failure was
        counted at admission). Rows an admission holds are skipped, not waited for, so
        that no two deadlock."""
        now = utcnow()
        with self._database.session() as session:
            stale = session.scalars(
                select(LoginThrottle)
                .where(
                    LoginThrottle.last_failure < now - self.limits.window,
                    or_(LoginThrottle.blocked_until.is_(None), LoginThrottle.blocked_until < now),
                )
                .limit(PRUNE_BATCH)
                .with_for_update(skip_locked=True)
            )
            for row in stale:
                session.delete(row)


def _pair(username: str, caller: str) -> str:
    # a name is up to 255 characters, as the key is: hashed together with the caller
    return hashlib.sha256(f"{caller}\0{username}".encode()).hexdigest()


def _seconds(delta: timedelta) -> int:
    return max(math.ceil(delta.total_seconds()), 1)
