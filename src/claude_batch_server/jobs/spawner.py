"""The spawner: a small, long-lived root process that starts the processes of every job.

Forking the server itself per job is slow: its ~100 MB of memory must be mapped into each
child, CPython cannot use vfork once user=, group= and extra_groups= are given, and a
fresh Python for the reaper costs tens of milliseconds more. The spawner is started once,
imports little, and forks a copy of itself per job, which joins the job's control group,
takes the job's user, groups, session and limits and then runs the reaper (`reaper.reap`)
in place: a job starts with one fork of a small process and one exec, of Claude Code.

Joining the job's control group costs the start most (docs/benchmarks.md, "Queue"): a
write of a pid to cgroup.procs takes the kernel's global cgroup_threadgroup_rwsem for
writing, which waits for an RCU grace period (5-20 ms) unless another migration just did.
So the child is born in the job's v2 group (clone3 with CLONE_INTO_CGROUP, which takes
that lock for reading only), and moves itself into each v1 group by writing 0 to `tasks`
(the calling thread alone: it is the only one, so the whole process moves, and the kernel
skips the lock for it). Where clone3 cannot do it, a plain fork and cgroup.procs serve.

    python -I -m claude_batch_server.jobs.spawner REQUESTS_FD REPORTS_FD

Requests come on REQUESTS_FD and reports go to REPORTS_FD in the format of `wire`. When the
requests end (the server stopped or died), every job still running is stopped as a cancel
stops it, and the spawner exits once they are gone. Standard library only.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import selectors
import signal
import socket
import struct
import sys
import tempfile
from pathlib import Path

from claude_batch_server.jobs import landlock, reaper, seccomp, wire
from claude_batch_server.jobs.wire import HEADER, NO_START, STREAMS, Request

SYS_CLONE3 = 435  # the same number on every architecture
CLONE_INTO_CGROUP = 0x200000000
CLONE_ARGS = "=11Q"  # struct clone_args up to `cgroup` (CLONE_ARGS_SIZE_VER2)
# the interpreter's lock held across the call, as os.fork holds it
_LIBC = ctypes.PyDLL(None, use_errno=True)


class Spawner:
    def __init__(self, requests: socket.socket, reports: socket.socket) -> None:
        self.requests = requests
        self.reports = reports
        self.children: set[int] = set()
        self.open = True
        self.pid = os.getpid()

    def serve(self) -> None:
        wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the selector
        for signum in reaper.STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)  # we end when the server does
        with selectors.DefaultSelector() as selector:
            selector.register(self.requests, selectors.EVENT_READ, self._on_request)
            selector.register(wake_read, selectors.EVENT_READ, lambda: _drain(wake_read))
            while self.open or self.children:
                for key, _ in selector.select():
                    key.data()
                self._reap()
                if not self.open and self.requests.fileno() >= 0:
                    selector.unregister(self.requests)
                    self.requests.close()

    def _on_request(self) -> None:
        received = self._receive()
        if received is None:
            self._close()
            return
        request, fds = received
        try:
            self._spawn(request, fds)
        finally:
            for fd in fds:
                os.close(fd)

    def _receive(self) -> tuple[Request, list[int]] | None:
        header, fds = b"", []
        while len(header) < HEADER:
            data, passed, _, _ = socket.recv_fds(self.requests, HEADER - len(header), STREAMS)
            fds += passed
            if not data:
                return None
            header += data
        body = _read_exactly(self.requests, int.from_bytes(header, "big"))
        return (wire.decode(body), fds) if body is not None else None

    def _spawn(self, request: Request, fds: list[int]) -> None:
        if len(fds) != STREAMS:
            self._report(wire.failed(request["id"], f"{len(fds)} descriptors, not {STREAMS}"))
            return
        # blocked across the fork: a stop that comes before the reaper can take it waits
        signal.pthread_sigmask(signal.SIG_BLOCK, reaper.STOP_SIGNALS)
        try:
            pid, joined = _fork(request["cgroups"])
        except OSError as error:
            self._report(wire.failed(request["id"], f"fork: {error}"))
            return
        finally:
            if os.getpid() == self.pid:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, reaper.STOP_SIGNALS)
        if pid == 0:
            _become_job(request, fds, joined)
        self.children.add(pid)
        self._report(wire.started(request["id"], pid))

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self._report(wire.exited(pid, os.waitstatus_to_exitcode(status)))

    def _close(self) -> None:
        """The server is gone: stop every job still running, as a cancel would."""
        self.open = False
        for pid in self.children:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                continue

    def _report(self, report: bytes) -> None:
        # should the server be gone, its successor finds the jobs in the database
        with contextlib.suppress(OSError):
            self.reports.sendall(report)


def _fork(cgroups: list[str]) -> tuple[int, str | None]:
    """os.fork(), the child born in the v2 group among the cgroup.procs files `cgroups` if
    there is one and the kernel can; returns the pid (0 in the child) and the file of the
    group joined so."""
    unified = [procs for procs in cgroups if not _v1_tasks(procs)]
    if len(unified) == 1:
        with contextlib.suppress(OSError):  # ENOSYS, E2BIG: an older kernel
            return _clone_into(str(Path(unified[0]).parent)), unified[0]
    return os.fork(), None


def _clone_into(group: str) -> int:
    """fork(2) by clone3, the child in the v2 control group `group` from its birth. The
    interpreter is told as os.fork tells it; the spawner has a single thread, so nothing
    that glibc's fork would reset for other threads' sake is held."""
    fd = os.open(group, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    args = struct.pack(CLONE_ARGS, CLONE_INTO_CGROUP, 0, 0, 0, signal.SIGCHLD, *[0] * 5, fd)
    ctypes.pythonapi.PyOS_BeforeFork()
    pid = _LIBC.syscall(ctypes.c_long(SYS_CLONE3), args, ctypes.c_size_t(len(args)))
    failed = ctypes.get_errno()
    if pid == 0:
        ctypes.pythonapi.PyOS_AfterFork_Child()
        return 0
    ctypes.pythonapi.PyOS_AfterFork_Parent()
    os.close(fd)
    if pid < 0:
        raise OSError(failed, os.strerror(failed))
    return int(pid)


def _v1_tasks(procs: str) -> str | None:
    """The `tasks` file beside a v1 group's cgroup.procs (v2 has none)."""
    tasks = Path(procs).with_name("tasks")
    return str(tasks) if tasks.exists() else None


def _join(cgroups: list[str], joined: str | None) -> None:
    """In the child, while it is root and runs nothing else: into every group."""
    for procs in cgroups:
        if procs == joined:
            continue
        tasks = _v1_tasks(procs)
        with open(tasks or procs, "w") as group:
            group.write("0" if tasks else str(os.getpid()))


def _become_job(request: Request, fds: list[int], joined: str | None) -> None:
    """In the forked child: become the job's process, run it, and never return."""
    status = NO_START
    try:
        _join(request["cgroups"], joined)  # before anything runs, while we are root
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        os.closerange(STREAMS, os.sysconf("SC_OPEN_MAX"))
        os.setsid()
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NOFILE, (request["nofile"], request["nofile"]))
        # the job's files are its user's alone: with the usual 022, the folders Claude Code
        # makes in a (Debian-default 0755) HOME would show every local user its jobs
        os.umask(0o077)
        seccomp.deny_quota_escapes()  # while root: no ioctl of the job's leaves its quota
        os.setgroups(request["groups"])
        os.setgid(request["gid"])
        os.setuid(request["uid"])
        os.chdir(request["cwd"])
        os.environ.clear()  # posix_spawnp searches the PATH of this process: the user's
        os.environ.update(request["env"])
        if request["sandbox"] is not None:  # inherited by every process of the job
            landlock.confine(request["sandbox"])
        if not request["files"]:  # no folder to make, and remove
            status = reaper.reap(request["argv"], request["env"], request["grace"])
            return
        with tempfile.TemporaryDirectory(prefix="claude-batch-") as private:  # 0700, ours
            argv = [*request["argv"], *_write_files(private, request["files"])]
            status = reaper.reap(argv, request["env"], request["grace"])
    except BaseException as error:  # whatever it is, the job's stderr tells it
        os.write(2, f"claude-batch-server: the job could not start: {error}\n".encode())
    finally:
        os._exit(status)


def _write_files(folder: str, files: dict[str, str]) -> list[str]:
    """Each content in a file of its own in `folder`, readable by the user alone; returns
    the `flag=path` arguments that name them."""
    arguments = []
    for number, (flag, content) in enumerate(files.items()):
        path = f"{folder}/{number}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with open(fd, "w", encoding="utf-8", errors="replace") as file:
            file.write(content)
        arguments.append(f"{flag}={path}")
    return arguments


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 512):
            pass


def main() -> None:
    requests = socket.socket(fileno=int(sys.argv[1]))
    reports = socket.socket(fileno=int(sys.argv[2]))
    for sock in (requests, reports):
        sock.setblocking(True)
    Spawner(requests, reports).serve()


if __name__ == "__main__":
    main()
