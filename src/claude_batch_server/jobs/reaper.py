"""The first process of every job: it runs Claude Code and makes sure that, whenever the
run ends, nothing it started is left behind.

Claude Code starts its Bash tool's commands in sessions of their own, so a signal to the
job's process group does not reach them, and once the CLI exits they would be orphans of
init. The reaper, already running as the job's user (the spawner made it so), makes itself
a child subreaper: every orphan of the job is reparented to it, so it can always find and
kill the whole tree.

SIGTERM, SIGINT or SIGHUP to it: Claude Code gets SIGINT (its graceful stop), and
everything is killed after `grace` seconds. When Claude Code exits on its own, what it left
running gets SIGTERM, then SIGKILL after `grace`. It returns once it has no child left,
with Claude Code's exit code (128 + N for a signal N). Standard library only, as the
spawner that forks it.
"""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # blocked when we start
# Python ignores these for itself, and an ignored signal stays ignored across exec
_DEFAULTED = (signal.SIGPIPE, signal.SIGXFSZ)


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

    def run(self, argv: list[str], env: dict[str, str]) -> int:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self.on_stop)
        signal.signal(signal.SIGALRM, self.on_deadline)
        self.child = os.posix_spawnp(
            argv[0], argv, env, setsigmask=(), setsigdef=(*_DEFAULTED, *STOP_SIGNALS)
        )
        # a stop that came while we started is taken now, with Claude Code there to get it
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        while True:
            try:
                pid, wait_status = os.waitpid(-1, 0)
            except ChildProcessError:  # no child left: the whole tree is gone
                return self.status if self.status is not None else 1
            if pid == self.child:
                self.status = os.waitstatus_to_exitcode(wait_status)
                if _has_children():  # the common case is none, and /proc is not read
                    signal_all(signal.SIGTERM)
                    self._deadline()


def _has_children() -> bool:
    try:
        os.waitpid(-1, os.WNOHANG)  # an orphan that ended meanwhile is reaped in passing
    except ChildProcessError:
        return False
    return True


def reap(argv: list[str], env: dict[str, str], grace: float) -> int:
    """Runs `argv` as a subreaper until its whole tree is gone; returns its exit code."""
    libc = ctypes.CDLL(None, use_errno=True)
    # a fork of the root spawner: whatever of it is left in memory stays out of the user's
    # reach (ptrace, /proc/PID/mem) whatever fs.suid_dumpable says; exec resets this
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    status = Reaper(grace).run(argv, env)
    return 128 - status if status < 0 else status
