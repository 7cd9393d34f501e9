"""The local executor: each run a process of its user on this host, started by the
spawner (`spawner_client`, `process`), in a control group of its own (`containment`) and
confined by Landlock (`sandbox`). Its leftovers are found by the recorded process and by
the control group's name (`job-<id>`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

import anyio

from claude_batch_server.cgroups.base import Flavour, Usage
from claude_batch_server.jobs.containment import Containment
from claude_batch_server.jobs.executors.base import PreparedRun, ProcessRun
from claude_batch_server.jobs.outcome import Outcome, RunEnd
from claude_batch_server.jobs.process import AgentProcess, kill_leftover, start_agent
from claude_batch_server.jobs.sandbox import Sandbox
from claude_batch_server.jobs.spawner_client import ProcessSpec, SpawnerClient
from claude_batch_server.store.tables import Job


class LocalExecutor:
    name = "local"

    def __init__(self, spawner: SpawnerClient, containment: Containment, sandbox: Sandbox) -> None:
        self._spawner = spawner
        self._containment = containment
        self._sandbox = sandbox
        self.measures = containment.flavour is not Flavour.NONE
        self.memory_max = containment.limits.memory_max

    async def open(self) -> None:
        await self._spawner.start()

    async def close(self) -> None:
        await self._spawner.close()

    async def start(self, run: PreparedRun) -> LocalRun:
        process = await start_agent(
            self._spawner, partial(self._confine, run), partial(self._release, run.job_id)
        )
        return LocalRun(process, self._containment, run.job_id, self._release)

    def _confine(self, run: PreparedRun) -> ProcessSpec:
        """Blocking, as root: the run's temporary folder, its sandbox and control group."""
        env, confinement = self._sandbox.prepare(run.job_id, run.account, run.cwd)
        procs = tuple(self._containment.create(run.job_id))
        return ProcessSpec(
            run.argv, run.env | env, run.cwd, run.account, run.stdin, run.files, procs, confinement
        )

    def _release(self, job_id: str) -> Usage:
        """Blocking: kills what is left in the run's control group, removes its temporary
        folder; returns what the group used."""
        used = self._containment.end(job_id)
        self._sandbox.release(job_id)
        return used

    def end_leftover(self, job: Job) -> bool:
        killed = kill_leftover(job)
        # whatever left the process group (a setsid daemon) is still in the job's group
        self._release(job.id)
        return killed

    def sweep(self, keep: Callable[[], Iterable[str]]) -> int:
        return self._containment.sweep(keep)


class LocalRun(ProcessRun):
    def __init__(
        self,
        process: AgentProcess,
        containment: Containment,
        job_id: str,
        release: Callable[[str], Usage],
    ) -> None:
        super().__init__(process)
        self._containment = containment
        self._job_id = job_id
        self._release = release

    async def watch(self, on_usage: Callable[[Usage], None], on_oom: Callable[[], None]) -> None:
        await self._containment.watch(self._job_id, on_usage, on_oom)

    async def end(self) -> Usage:
        await self._process.clear_group()
        return await anyio.to_thread.run_sync(self._release, self._job_id)

    async def amend(self, outcome: Outcome, ended: RunEnd) -> Outcome:
        return outcome  # this host has nothing to add
