"""The first process of every job: it runs Claude Code and makes sure that, whenever the
run ends, nothing it started is left behind.

Claude Code starts its Bash tool's commands in sessions of their own, so a signal to the
job's process group does not reach them, and once the CLI exits they would be orphans of
init. This script, run as the job's user, makes itself a child subreaper: every orphan of
the job is reparented to it, so it can always find and kill the whole tree.

    python3 -I -S reaper.py GRACE NOFILE -- COMMAND ARGS...

SIGTERM, SIGINT or SIGHUP to it: Claude Code gets SIGINT (its graceful stop), and
everything is killed after GRACE seconds. When Claude Code exits on its own, what it left
running gets SIGTERM, then SIGKILL after GRACE. It exits once it has no child left, with
Claude Code's status (128 + N for a signal N). It starts with every job, so it imports
only what is cheap to import (no pathlib, no contextlib) and waits without polling.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36


def descendants(root: int) -> set[int]:
    """Every process whose parent chain leads to `root`, read from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as stat:
                    data = stat.read()
                parents[int(entry)] = int(data[data.rindex(b")") + 2 :].split()[1])
            except (OSError, ValueError):
                continue
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def signal_all(sig: int) -> None:
    for pid in descendants(os.getpid()):
        try:
            os.kill(pid, sig)
        except OSError:
            continue


class Reaper:
    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.child = 0
        self.status: int | None = None
        self.deadline_set = False

    def on_stop(self, signum: int, frame: object) -> None:
        if self.status is None and self.child:
            os.kill(self.child, signal.SIGINT)
        self._deadline()

    def on_deadline(self, signum: int, frame: object) -> None:
        signal_all(signal.SIGKILL)

    def _deadline(self) -> None:
        """SIGALRM after `grace` seconds kills whatever is left; waitpid wakes as it dies."""
        if not self.deadline_set:
            self.deadline_set = True
            signal.setitimer(signal.ITIMER_REAL, self.grace)

    def run(self, argv: list[str]) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self.on_stop)
        signal.signal(signal.SIGALRM, self.on_deadline)
        self.child = os.posix_spawnp(argv[0], argv, os.environ)
        while True:
            try:
                pid, wait_status = os.waitpid(-1, 0)
            except ChildProcessError:  # no child left: the whole tree is gone
                return self.status if self.status is not None else 1
            if pid == self.child:
                self.status = os.waitstatus_to_exitcode(wait_status)
                signal_all(signal.SIGTERM)
                self._deadline()


def main() -> None:
    grace, nofile = float(sys.argv[1]), int(sys.argv[2])
    argv = sys.argv[sys.argv.index("--") + 1 :]
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    status = Reaper(grace).run(argv)
    sys.exit(128 - status if status < 0 else status)


if __name__ == "__main__":
    main()
