"""The Slurm executor (EXECUTOR=slurm): each run of a job is a Slurm job step on the
cluster's nodes, and `Slurm` holds what it asks of the cluster: the `srun` line of a run,
and what `squeue`, `sstat`, `sacct`, `scancel` and `sinfo` say of it.

A run is one Slurm job (an allocation and its single step) that `srun` makes and waits
for; the spawner starts `srun` as the job's user, as it starts Claude Code for the local
executor (`process`), so Slurm runs the step as that user, and its output comes through
srun's pipes into the transcript as a local run's does. The job is named `cbs-<job id>` and
carries the server's tag (a digest of DATA_DIR) as its comment: a restarted server finds
a dead one's runs by both, and never touches jobs of another deployment sharing the
cluster. Nothing secret or user-written is in srun's argv: the job's environment goes
whole as srun's own (`--export=ALL`; Slurm sets neither HOME nor USER), the prompt on
stdin, the options in files.

Killing srun does not end its job (it runs on until InactiveLimit), so a run is stopped
with `scancel`, which ends every process of the step on its node; srun then exits. How
the run ended is Slurm's to say where it decided (its memory and time limits, a refused
request, a failed node): `squeue` remembers a job for MinJobAge after its end.
Landlock, the server's control groups and JOB_PIDS_MAX are this host's and do not apply:
the cluster's cgroups (task/cgroup, proctrack/cgroup) hold the step on its node.

What a run used is read with `sstat` while its step runs; where the cluster keeps
accounting (slurmdbd), its final figures are the ones Slurm recorded for the job's steps
(`sacct`), which cover the step's last moments that no reading saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import anyio

from claude_batch_server.cgroups.base import Usage
from claude_batch_server.jobs.executors.base import PreparedRun, ProcessRun
from claude_batch_server.jobs.lines import Line
from claude_batch_server.jobs.outcome import Outcome, RunEnd
from claude_batch_server.jobs.process import AgentProcess, kill_leftover, start_agent
from claude_batch_server.jobs.sandbox import Sandbox
from claude_batch_server.jobs.spawner_client import ProcessSpec, SpawnerClient
from claude_batch_server.jobs.status import JobStatus
from claude_batch_server.logs import log
from claude_batch_server.settings import SLURM_TOOLS
from claude_batch_server.store.tables import Job

JOB_PREFIX = "cbs-"
COMMAND_TIMEOUT = 30.0  # seconds a query of the controller may take
CANCEL_WAIT = 30.0  # seconds scancel's job gets to leave the queue's active states
FINAL_WAIT = 10.0  # seconds a job whose srun exited gets to leave the active states
WATCH_EVERY = 2.0  # seconds between readings of a running job's state and usage
ACCOUNTING_WAIT = 10.0  # seconds an ended job's record gets to reach Slurm's accounting
MAX_STEPS = 1000  # lines of sstat's or sacct's answer read: a step can start more steps
DISABLED = "accounting storage is disabled"  # what sacct says without slurmdbd
MIB = 1024 * 1024
ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "RESIZING")
# Slurm's environment variables that reach its commands from the server's: where the
# cluster's configuration is (every other SLURM_* would change what srun asks for)
PASSED = ("SLURM_CONF",)
TRES = "TRESUsageInTot,TRESUsageInMax"  # the step's CPU time in all, its largest task's memory
ACCOUNTED = "JobID,State,TotalCPU,MaxRSS"  # the same, as the accounting recorded it
REFUSED = re.compile(rb"srun: error: Unable to allocate resources: (.+)")
_CPU_TIME = re.compile(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)([KMGTP]?)")
# squeue's lines, where any user's job name or comment may hold "|" and newlines: only a
# line of this shape is one job, the rest is another line's tail (a job id as layout's)
_STATE_LINE = re.compile(r"(\d+)\|([A-Z_]+)\|([^|]*)")
_RUNNING_LINE = re.compile(
    rf"([A-Z_]+)\|([^|]+)\|([^|]*)\|{JOB_PREFIX}([A-Za-z0-9][A-Za-z0-9_-]{{0,127}})"
)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


class SlurmError(RuntimeError):
    """A Slurm command failed or did not answer in time."""


@dataclass(frozen=True)
class JobState:
    """One Slurm job of a run, as `squeue` shows it."""

    slurm_id: int
    state: str  # RUNNING, PENDING, COMPLETED, FAILED, OUT_OF_MEMORY, TIMEOUT, NODE_FAIL, ...
    reason: str  # why it waits or ended ("None" when there is nothing to say)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


@dataclass(frozen=True)
class Request:
    """What every run asks Slurm for, from the settings."""

    memory_max: int = 0  # bytes; 0: the cluster's default
    cpus: float = 0.0  # cores, rounded up; 0: the cluster's default
    partition: str = ""
    extra: tuple[str, ...] = ()  # SLURM_ARGS, split


class Slurm:
    """Blocking calls of Slurm's commands, as root, against the cluster that SLURM_CONF (or
    the host's own configuration) names."""

    def __init__(
        self, request: Request, tag: str, environ: Mapping[str, str] | None = None
    ) -> None:
        source = os.environ if environ is None else environ
        self.environment = {name: source[name] for name in PASSED if name in source}
        self._request = request
        self._tag = tag  # the comment of every job of this deployment
        self._tools = {name: _tool(name) for name in SLURM_TOOLS}
        self._accounting: bool | None = None  # whether the cluster keeps accounting, once asked

    def command(self, job_id: str, cwd: Path, timeout: float, argv: Sequence[str]) -> list[str]:
        """srun's command line for one run of `argv` in `cwd`: a job of one task, limited to
        the settings' memory and cores and to `timeout` seconds rounded up to minutes (the
        server's own timer ends it to the second; Slurm's limit is the backstop)."""
        request = self._request
        line = [
            self._tools["srun"],
            "--unbuffered",  # each line as it is written, not in blocks
            "--quiet",
            "--quit-on-interrupt",  # a SIGINT (the reaper stops, the server died) ends the job
            f"--job-name={JOB_PREFIX}{job_id}",
            f"--comment={self._tag}",
            f"--chdir={cwd}",
            "--export=ALL",  # srun's own environment is the job's, built for its user
            "--ntasks=1",
            "--nodes=1",
            f"--time={max(1, math.ceil(timeout / 60))}",
        ]
        if request.memory_max:
            line.append(f"--mem={math.ceil(request.memory_max / MIB)}M")
        if request.cpus:
            line.append(f"--cpus-per-task={math.ceil(request.cpus)}")
        if request.partition:
            line.append(f"--partition={request.partition}")
        return [*line, *request.extra, "--", *argv]

    def state(self, job_id: str, user: str) -> JobState | None:
        """The latest Slurm job of the job's runs, while Slurm remembers it (MinJobAge after
        its end); None when it has none. Only the job's user's: anyone may name a job. Asked
        for fields Slurm alone writes: a comment (the tag) may hold a newline and a line
        naming another user's job, which a cancel would then end as root. The name holds a
        job id of this deployment's, which no other deployment's job has."""
        name, owner = f"--name={JOB_PREFIX}{job_id}", f"--user={user}"
        out = self._query("squeue", "--states=all", name, owner, "-o", "%i|%T|%r")
        found = [_job_state(line) for line in out.splitlines()[:MAX_STEPS]]
        return max(filter(None, found), key=lambda state: state.slurm_id, default=None)

    def usage(self, slurm_id: int) -> Usage | None:
        """What the running step used so far (`sstat`, which needs no accounting database);
        None once it is gone."""
        try:
            out = self._query(
                "sstat", "--allsteps", "--noconvert", "-P", "-j", str(slurm_id), "-o", TRES
            )
        except SlurmError:
            return None
        cpu, peak = 0.0, 0
        for line in out.splitlines()[:MAX_STEPS]:
            total, most = (_tres(part) for part in line.split("|", 1))
            cpu += _cpu_seconds(total.get("cpu", "0:0"))
            peak = max(peak, _bytes(most.get("mem", "0")))
        return Usage(cpu, peak) if out.strip() else None

    @property
    def accounting(self) -> bool:
        """Whether the cluster keeps accounting: sacct answers (asked once), or fails for
        another reason than its absence (slurmdbd down for a moment)."""
        if self._accounting is None:
            try:
                self._query("sacct", "-P", "-j", "1", "-o", "JobID")
                self._accounting = True
            except SlurmError as error:
                self._accounting = DISABLED not in str(error)
        return self._accounting

    def accounted(self, slurm_id: int, wait: float) -> Usage | None:
        """What the ended Slurm job's steps used in all, as the accounting recorded it,
        waiting up to `wait` seconds for the record of its end (it comes after the job
        leaves the queue); None without accounting or its record."""
        deadline = time.monotonic() + wait
        while self.accounting:
            used = self._accounted(slurm_id)
            if used is not None or time.monotonic() > deadline:
                return used
            time.sleep(0.2)
        return None

    def _accounted(self, slurm_id: int) -> Usage | None:
        out = self._query("sacct", "-P", "--noconvert", "-j", str(slurm_id), "-o", ACCOUNTED)
        ended, cpu, peak = False, 0.0, 0
        for line in out.splitlines()[:MAX_STEPS]:
            step, state, total, rss = [*line.split("|", 3), "", "", ""][:4]
            if step == str(slurm_id):
                ended = state.split(" ", 1)[0] not in ACTIVE  # "CANCELLED by 0"
            elif step.startswith(f"{slurm_id}."):
                cpu += _cpu_seconds(total)
                peak = max(peak, _bytes(rss))
        return Usage(cpu, peak) if ended else None

    def cancel(self, job_id: str, user: str, known: int | None = None) -> bool:
        """Ends every Slurm job of the job's runs, by name and user, and the one `known` by
        its id (the step may have renamed its own job); the step's processes get SIGTERM,
        then SIGKILL after the cluster's KillWait. Waits, bounded, until none is active;
        returns whether one was."""
        scancel = self._tools["scancel"]
        before = self.state(job_id, user)
        self._call(scancel, f"--name={JOB_PREFIX}{job_id}", f"--user={user}")
        if known is not None:
            with contextlib.suppress(SlurmError):  # ended already, and forgotten
                self._call(scancel, str(known))
        self.settled(job_id, user, CANCEL_WAIT)
        return before is not None and before.active

    def settled(self, job_id: str, user: str, wait: float) -> JobState | None:
        """The job's latest Slurm job once it is no longer active, or as it is after `wait`
        seconds."""
        deadline = time.monotonic() + wait
        while (state := self.state(job_id, user)) is not None and state.active:
            if time.monotonic() > deadline:
                log.warning("a Slurm job is still active", job=job_id, state=state.state)
                break
            time.sleep(0.1)
        return state

    def running(self) -> list[tuple[str, str]]:
        """The ids of the jobs of this deployment that have a Slurm job queued or running,
        each with the user it runs as."""
        out = self._query("squeue", "-o", "%T|%u|%k|%j")
        found = set()
        for line in out.splitlines():
            parsed = _RUNNING_LINE.fullmatch(line)
            if parsed is None:
                continue
            state, user, tag, job_id = parsed.groups()
            if tag == self._tag and state in ACTIVE:
                found.add((job_id, user))
        return sorted(found)

    def check(self, partition: str = "") -> str:
        """ "ok" when a node of the partition (or any) answers and takes jobs; else "failing:"
        and why."""
        where = [f"--partition={partition}"] if partition else []
        try:
            out = self._call(
                self._tools["sinfo"], "--noheader", "--responding", "-N", *where, "-o", "%T"
            )
        except SlurmError as error:
            return f"failing: {error}"
        states = {state.rstrip("*~#!%$@^-+") for state in out.split()}
        if states & {"idle", "mixed", "allocated", "completing"}:
            return "ok"
        return f"failing: no node takes jobs ({', '.join(sorted(states)) or 'none answers'})"

    def _query(self, tool: str, *arguments: str) -> str:
        return self._call(self._tools[tool], "--noheader", *arguments)

    def _call(self, path: str, *arguments: str) -> str:
        try:
            done = subprocess.run(
                [path, *arguments],
                env={"PATH": os.defpath, **self.environment},
                capture_output=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise SlurmError(f"{Path(path).name}: {error}") from None
        if done.returncode != 0:
            said = done.stderr.decode(errors="replace").strip().splitlines()
            raise SlurmError(f"{Path(path).name}: {said[-1][:300] if said else done.returncode}")
        return done.stdout.decode(errors="replace")


def refusal(stderr_lines: Sequence[str]) -> str | None:
    """Why Slurm refused a run's request, from srun's standard error; None if it did not."""
    for line in stderr_lines:
        found = REFUSED.search(line.encode())
        if found:
            return found.group(1).decode(errors="replace").strip()
    return None


def _tool(name: str) -> str:
    path = shutil.which(name, path=os.defpath + ":/usr/local/bin")
    if path is None:
        raise SlurmError(f"Slurm's {name} is not installed")
    return path


def _job_state(line: str) -> JobState | None:
    parsed = _STATE_LINE.fullmatch(line)
    if parsed is None:
        return None
    slurm_id, state, reason = parsed.groups()
    return JobState(int(slurm_id), state, reason)


def _tres(field: str) -> dict[str, str]:
    """`cpu=00:00:01,mem=5M,...` as a mapping."""
    return dict(item.split("=", 1) for item in field.strip().split(",") if "=" in item)


def _cpu_seconds(value: str) -> float:
    """Slurm's `[D-][HH:]MM:SS[.mmm]`, in seconds."""
    found = _CPU_TIME.fullmatch(value.strip())
    if found is None:
        return 0.0
    days, hours, minutes, seconds = found.groups()
    return ((int(days or 0) * 24 + int(hours or 0)) * 60 + int(minutes)) * 60 + float(seconds)


def _bytes(value: str) -> int:
    found = _SIZE.fullmatch(value.strip())
    if found is None:
        return 0
    return int(float(found.group(1)) * _UNITS[found.group(2)])


# how a Slurm job ended, where that, not Claude Code's exit, says how the run ended
_ENDED_BY_SLURM = {
    "NODE_FAIL": "the Slurm node it ran on failed",
    "BOOT_FAIL": "its Slurm node failed to boot",
    "PREEMPTED": "Slurm preempted it",
    "DEADLINE": "it reached its Slurm deadline",
    "CANCELLED": "it was cancelled in Slurm, not through this server",
}


class SlurmExecutor:
    name = "slurm"
    measures = True  # sstat's figures of the step, then the accounting's where it is kept

    def __init__(
        self, spawner: SpawnerClient, sandbox: Sandbox, slurm: Slurm, memory_max: int
    ) -> None:
        self._spawner = spawner
        self._sandbox = sandbox  # off under Slurm: only the run's TMPDIR, beneath DATA_DIR
        self._slurm = slurm
        self.memory_max = memory_max

    async def open(self) -> None:
        await self._spawner.start()

    async def close(self) -> None:
        await self._spawner.close()

    async def start(self, run: PreparedRun) -> SlurmRun:
        process = await start_agent(
            self._spawner, partial(self._spec, run), partial(self._sandbox.release, run.job_id)
        )
        return SlurmRun(process, self._slurm, run.job_id, run.account.name, self._sandbox)

    def _spec(self, run: PreparedRun) -> ProcessSpec:
        """Blocking, as root: srun's process, as the user, with the run's TMPDIR (beneath
        DATA_DIR, which the nodes share) and the job's whole environment as srun's own."""
        env, _ = self._sandbox.prepare(run.job_id, run.account, run.cwd)
        argv = self._slurm.command(run.job_id, run.cwd, run.timeout, run.argv)
        env = run.env | env | self._slurm.environment
        return ProcessSpec(argv, env, run.cwd, run.account, run.stdin, run.files)

    def end_leftover(self, job: Job) -> bool:
        killed = kill_leftover(job)  # srun, should it still run here
        try:
            killed = self._slurm.cancel(job.id, job.user) or killed
        except SlurmError as error:
            log.error("a dead server's Slurm job is left", job=job.id, error=str(error))
        self._sandbox.release(job.id)
        return killed

    def sweep(self, keep: Callable[[], Iterable[str]]) -> int:
        swept = 0
        try:
            # listed before the running ids are read: a job another server claims between
            # the two is then in `keep`, never taken for a dead server's
            listed = self._slurm.running()
            kept = set(keep())
            for job_id, user in listed:
                if job_id not in kept:
                    self._slurm.cancel(job_id, user)
                    swept += 1
        except SlurmError as error:  # the server serves; /health tells of the cluster
            log.error("a dead server's Slurm jobs are unknown", error=str(error))
        return swept


class SlurmRun(ProcessRun):
    """One run: srun on this host, its Slurm job on a node."""

    def __init__(
        self, process: AgentProcess, slurm: Slurm, job_id: str, user: str, sandbox: Sandbox
    ) -> None:
        super().__init__(process)
        self._slurm = slurm
        self._job_id = job_id
        self._user = user
        self._sandbox = sandbox
        self._seen: JobState | None = None  # the latest reading of its Slurm job
        self._waited: str | None = None  # why it still waited in Slurm's queue when stopped
        self._refused: str | None = None  # why Slurm refused it, as srun said
        self._used = Usage()

    async def stderr(self) -> AsyncIterator[Line]:
        async for line in self._process.stderr():  # srun's own errors come this way too
            if self._refused is None:
                self._refused = refusal([line.data.decode(errors="replace")])
            yield line

    async def stop(self) -> None:
        """scancel first: srun killed alone would leave its job running."""
        try:
            await anyio.to_thread.run_sync(self._cancel)
        except SlurmError as error:  # srun still gets the stop, and ends its job itself
            log.error("scancel failed", job=self._job_id, error=str(error))
        await self._process.stop()

    def _cancel(self) -> None:
        seen = self._slurm.state(self._job_id, self._user) or self._seen
        if seen is not None and seen.state == "PENDING":
            self._waited = seen.reason
        self._slurm.cancel(self._job_id, self._user, seen.slurm_id if seen else None)

    async def watch(self, on_usage: Callable[[Usage], None], on_oom: Callable[[], None]) -> None:
        """Reads the job's state and, while it runs, what its step used so far; an
        out-of-memory kill is told by its state once it ended (`end`)."""
        while True:
            await asyncio.sleep(WATCH_EVERY)
            await anyio.to_thread.run_sync(self._read, on_usage)

    def _read(self, on_usage: Callable[[Usage], None]) -> None:
        try:
            self._seen = self._slurm.state(self._job_id, self._user) or self._seen
            if self._seen is None or self._seen.state != "RUNNING":
                return
            used = self._slurm.usage(self._seen.slurm_id)
            if used is None:
                return
            self._used = Usage(
                max(self._used.cpu_seconds, used.cpu_seconds),
                max(self._used.memory_peak_bytes, used.memory_peak_bytes),
            )
            on_usage(self._used)
        except Exception:  # a reading is worth no failed run
            log.exception("reading a Slurm job failed", job=self._job_id)

    async def end(self) -> Usage:
        await self._process.clear_group()
        await anyio.to_thread.run_sync(self._settle)
        oom = self._seen is not None and self._seen.state == "OUT_OF_MEMORY"
        return Usage(self._used.cpu_seconds, self._used.memory_peak_bytes, int(oom))

    def _settle(self) -> None:
        """Blocking: the job's final state; a job that srun left behind (srun killed, or a
        failure of ours) is cancelled. Its TMPDIR goes."""
        try:
            code = self._process.poll()
            wait = FINAL_WAIT if code is not None and code >= 0 else 0.0
            seen = self._slurm.settled(self._job_id, self._user, wait)
            if seen is not None and seen.active:
                self._slurm.cancel(self._job_id, self._user, seen.slurm_id)
                seen = self._slurm.state(self._job_id, self._user)
            self._seen = seen or self._seen
            self._account()
        except SlurmError as error:
            log.error("the end of a Slurm job is unknown", job=self._job_id, error=str(error))
        finally:
            self._sandbox.release(self._job_id)

    def _account(self) -> None:
        """The ended job's figures from Slurm's accounting, where it is kept and has them;
        else the last reading of sstat stays."""
        if self._seen is None or self._seen.active or not self._slurm.accounting:
            return
        try:
            used = self._slurm.accounted(self._seen.slurm_id, ACCOUNTING_WAIT)
        except SlurmError as error:  # slurmdbd away: the readings of the run stay
            log.warning("Slurm's accounting did not answer", job=self._job_id, error=str(error))
            return
        if used is None:
            log.warning("no accounting record of a Slurm job", job=self._job_id)
        else:
            self._used = used

    async def amend(self, outcome: Outcome, ended: RunEnd) -> Outcome:
        """Where Slurm decided how the run ended: a refused request, its time limit, a
        failed node, a cancel from outside; a timeout while it still waited says why."""
        if ended is RunEnd.TIMEOUT and self._waited is not None:
            error = f"{outcome.error}, still pending in Slurm ({self._waited})"
            return Outcome(outcome.status, outcome.exit_code, error)
        if ended is not RunEnd.EXITED:
            return outcome
        if self._refused is not None:
            return Outcome(
                JobStatus.FAILED, outcome.exit_code, f"Slurm refused the job: {self._refused}"
            )
        state = self._seen.state if self._seen is not None else None
        if state == "TIMEOUT":
            return Outcome(JobStatus.TIMEOUT, outcome.exit_code, "Slurm ended it at its time limit")
        if state in _ENDED_BY_SLURM and self._seen is not None:
            error = f"{_ENDED_BY_SLURM[state]} ({self._seen.reason})"
            return Outcome(JobStatus.FAILED, outcome.exit_code, error)
        return outcome
