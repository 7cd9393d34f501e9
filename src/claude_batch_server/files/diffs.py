"""Diffs of workspaces, computed within bounds so that no workspace can stall the server.

A diff runs in a process of its own (`diffproc`) inside a control group of its own, with
LIMITS on CPU and memory and DIFF_TIMEOUT on time; files over MAX_FILE are left out and
named. Parallel requests for one job share one computation; a request waits for it at
most WAIT seconds (then 503; the computation goes on, bounded, and a retry shares it).
The diff of an ended job cannot change until it runs again, so the last few are kept. No
worker thread waits meanwhile: the routes that ask are async. The process's temporary
files (root's pack of the start commit) go in a folder removed after it, killed or not;
a server that died meanwhile left it, for the next one to remove at start (`sweep`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path

import anyio

from claude_batch_server.accounts import Account
from claude_batch_server.cgroups.base import DIFF_PREFIX, Limits
from claude_batch_server.errors import Unavailable
from claude_batch_server.files import diffproc
from claude_batch_server.jobs.containment import Containment
from claude_batch_server.logs import log
from claude_batch_server.servergit import MAX_OUTPUT as MAX_DIFF
from claude_batch_server.servergit import Start

LIMITS = Limits(memory_max=512 * 2**20, cpus=1.0, pids_max=64)
DIFF_TIMEOUT = 120.0  # seconds one computation may take, then it is killed
WAIT = 20.0  # seconds a request waits for it
MAX_FILE = 16 * 2**20  # bytes: larger files are left out of a diff, and named
CACHED = 32  # diffs of ended jobs kept
CACHED_BYTES = 64 * 2**20
SCRATCH = "cbs-diff-"  # then the server's pid: a folder of a live server's is kept at start
MAX_SWEPT = 100_000  # entries of the temporary folder looked at by a start's `sweep`


class BoundedDiffs:
    def __init__(self, containment: Containment) -> None:
        self._containment = containment
        self._running: dict[str, asyncio.Future[bytes]] = {}
        self._cache: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    async def diff(
        self, job_id: str, version: str | None, account: Account, workspace: Path, start: Start
    ) -> bytes:
        """The diff of `workspace` against its `start` commit (read from the stored
        repository). `version`: what tells this state of an ended job's workspace apart
        (its runs and end), None while it may still change."""
        key = (job_id, version) if version is not None else None
        if key is not None and (cached := self._cache.get(key)) is not None:
            self._cache.move_to_end(key)
            return cached
        computing = self._running.get(job_id)
        if computing is None:
            computing = asyncio.ensure_future(self._compute(job_id, account, workspace, start))
            self._running[job_id] = computing
            computing.add_done_callback(lambda done: self._done(job_id, key, done))
        try:
            return await asyncio.wait_for(asyncio.shield(computing), WAIT)
        except TimeoutError:
            raise Unavailable(
                f"the diff is taking longer than {WAIT:g} s (a large workspace?); it goes on"
                " being computed: try again in a while"
            ) from None

    def _done(self, job_id: str, key: tuple[str, str] | None, done: asyncio.Future[bytes]) -> None:
        self._running.pop(job_id, None)
        if key is None or done.cancelled() or done.exception() is not None:
            return
        self._cache[key] = done.result()
        while len(self._cache) > CACHED or sum(map(len, self._cache.values())) > CACHED_BYTES:
            self._cache.popitem(last=False)

    async def _compute(self, job_id: str, account: Account, workspace: Path, start: Start) -> bytes:
        group = DIFF_PREFIX + job_id
        procs = await anyio.to_thread.run_sync(self._containment.create_named, group, LIMITS)
        # a process killed (time, memory) leaves its temporary files: they are removed here
        scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH}{os.getpid()}-"))
        scratch.chmod(0o711)  # the user's git passes through to its git dir inside
        request = {
            "cgroups": procs,
            "account": asdict(account) | {"home": str(account.home)},
            "workspace": str(workspace),
            "commit": start.commit,
            "stored": str(start.git_dir),
            "max_file": MAX_FILE,
        }
        started = time.perf_counter()
        try:
            run = _run(json.dumps(request).encode(), scratch)
            output = await asyncio.wait_for(run, DIFF_TIMEOUT)
        except TimeoutError:
            raise Unavailable(
                f"the diff took longer than {DIFF_TIMEOUT:g} s and was stopped"
            ) from None
        finally:
            await anyio.to_thread.run_sync(self._containment.end_named, group)
            await anyio.to_thread.run_sync(lambda: shutil.rmtree(scratch, ignore_errors=True))
        ms = round((time.perf_counter() - started) * 1000, 1)
        log.info("diff computed", job=job_id, ms=ms, size=len(output))
        return output


def sweep() -> int:
    """Blocking, at start: removes the diffs' temporary folders that dead servers left (root's,
    named by a pid that no process has now); returns how many. Servers of other DATA_DIRs
    may share the temporary folder: theirs are alive. Anyone may write there: an entry
    of someone else's, or a link, is not ours."""
    swept = 0
    with os.scandir(tempfile.gettempdir()) as entries:
        for entry in itertools.islice(entries, MAX_SWEPT):
            pid = entry.name.removeprefix(SCRATCH).partition("-")[0]
            # ASCII digits alone: anyone may name an entry "cbs-diff-²-…", which isdigit()
            # takes and int() refuses (the server then would not start)
            ours = entry.name.startswith(SCRATCH) and pid.isascii() and pid.isdigit()
            if ours and _left(entry, int(pid)):
                shutil.rmtree(entry.path, ignore_errors=True)  # follows no link beneath
                swept += 1
    return swept


def _left(entry: os.DirEntry[str], pid: int) -> bool:
    """Whether `entry` is a folder of the server's own, made by a process that is gone."""
    try:
        folder = entry.is_dir(follow_symlinks=False)
        if not folder or entry.stat(follow_symlinks=False).st_uid != os.geteuid():
            return False
    except OSError:  # gone meanwhile
        return False
    return not Path(f"/proc/{pid}").exists()


async def _run(request: bytes, scratch: Path) -> bytes:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",
        "-m",
        diffproc.__name__,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # none of the server's settings or secrets
        env={"PATH": os.defpath, "TMPDIR": str(scratch)},
        start_new_session=True,
    )
    try:
        output, errors = await process.communicate(request)
    finally:
        if process.returncode is None:  # cancelled: its group is killed right after
            process.kill()
            await process.wait()
    if process.returncode != 0:
        message = errors.decode("utf-8", "replace").strip()[-2000:]
        raise Unavailable(f"git diff failed: {message or f'exit {process.returncode}'}")
    if len(output) > MAX_DIFF:
        raise Unavailable(f"the diff is larger than {MAX_DIFF // 2**20} MiB")
    return output
