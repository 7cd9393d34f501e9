"""Sandbox benchmark: what the sandbox adds to the start of every job, measured alone.

    .venv/bin/python -m bench.sandbox [--runs 500]

As root (it makes a throwaway OS user). The server's part (`Sandbox.prepare`: the run's
TMPDIR made, emptied first, given to the user) and the job's part (`landlock.confine` in
a forked child that took the user's ids, against the same fork without it) are timed
separately; the medians are what a job start pays.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.users import UserFactory

from claude_batch_server import accounts
from claude_batch_server.jobs import landlock
from claude_batch_server.jobs.sandbox import Sandbox
from claude_batch_server.settings import SandboxMode


def timed(work: Callable[[], None], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        began = time.perf_counter()
        work()
        samples.append((time.perf_counter() - began) * 1000)
    return samples


def forked(uid: int, gid: int, confinement: landlock.Confinement | None) -> Callable[[], None]:
    def run() -> None:
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
                if confinement is not None:
                    landlock.confine(confinement)
                status = 0
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        assert status == 0, "the child failed"

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    runs = parser.parse_args().runs
    users = UserFactory()
    try:
        account = accounts.lookup(users.create().name)
        assert account is not None
        with tempfile.TemporaryDirectory(prefix="bench-sandbox-", dir="/var/lib") as tmp:
            Path(tmp).chmod(0o755)
            sandbox = Sandbox(SandboxMode.ON, Path(tmp) / "tmp")
            workspace = Path(tmp) / "workspace"
            workspace.mkdir()
            _, confinement = sandbox.prepare("bench", account, workspace)
            prepare = timed(lambda: sandbox.prepare("bench", account, workspace), runs)
            plain = timed(forked(account.uid, account.gid, None), runs)
            confined = timed(forked(account.uid, account.gid, confinement), runs)
    finally:
        users.cleanup()
    print(f"| Landlock ABI {landlock.abi()} | runs | median (ms) | p99 (ms) |")
    print("| --- | --- | --- | --- |")
    for name, samples in (
        ("Sandbox.prepare (server)", prepare),
        ("fork + setuid, no sandbox", plain),
        ("fork + setuid + landlock.confine", confined),
    ):
        p99 = statistics.quantiles(samples, n=100)[98]
        print(f"| {name} | {runs} | {statistics.median(samples):.3f} | {p99:.3f} |")


if __name__ == "__main__":
    main()
