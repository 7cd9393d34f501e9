"""The spawner and the reaper on their own: a job's process as its user sees it, and what
is left of it once it ends, is stopped, or loses its server."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from claude_batch_server import accounts
from claude_batch_server.jobs.process import AgentProcess, group_alive
from claude_batch_server.jobs.spawner_client import ProcessSpec, SpawnerClient
from tests.support.users import OsUser, UserFactory, running_processes

ENV = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "ONLY": "this"}


def run_with_spawner(body: Callable[[SpawnerClient], Awaitable[None]]) -> None:
    async def main() -> None:
        spawner = SpawnerClient()
        await spawner.start()
        try:
            await body(spawner)
        finally:
            await spawner.close()

    asyncio.run(main())


def spec(user: OsUser, script: str, cwd: Path = Path("/"), stdin: bytes = b"") -> ProcessSpec:
    account = accounts.lookup(user.name)
    assert account is not None
    return ProcessSpec(["sh", "-c", script], ENV, cwd, account, stdin)


async def output(process: AgentProcess) -> tuple[str, str, int]:
    out = b"".join([line.data async for line in process.stdout()])
    err = b"".join([line.data async for line in process.stderr()])
    return out.decode(), err.decode(), await process.wait()


def processes_of(user: OsUser) -> list[str]:
    return running_processes(user.name)


def test_the_process_is_the_users_with_nothing_else(users: UserFactory) -> None:
    group = users.group()
    user = users.create(groups=(group,))
    home = Path(f"/home/{user.name}")
    script = (
        "id -un; id -Gn; pwd; env | sort; cat; ulimit -n; ulimit -c; "
        "grep SigIgn /proc/self/status; echo oops >&2; exit 3"
    )

    async def body(spawner: SpawnerClient) -> None:
        process = AgentProcess(spec(user, script, home, b"from stdin\n"), spawner)
        await process.start()
        out, err, code = await output(process)
        lines = out.splitlines()
        assert lines[0] == user.name
        assert set(lines[1].split()) == {user.name, group}
        assert lines[2] == str(home)
        env = {line.partition("=")[0] for line in lines[3:] if "=" in line}
        assert env - {"PWD", "SHLVL", "_", "OLDPWD"} == set(ENV)
        assert "from stdin" in lines
        assert lines[-3:-1] == ["8192", "0"]
        ignored = int(lines[-1].removeprefix("SigIgn:"), 16)
        assert not ignored & (1 << signal.SIGPIPE - 1 | 1 << signal.SIGXFSZ - 1)
        assert err == "oops\n"
        assert code == 3
        assert process.pid_start is not None

    run_with_spawner(body)


def test_what_the_run_left_running_is_killed_when_it_ends(users: UserFactory) -> None:
    user = users.create()

    async def body(spawner: SpawnerClient) -> None:
        process = AgentProcess(spec(user, "setsid sleep 1000 & echo started"), spawner)
        await process.start()
        out, _, code = await output(process)
        await process.clear_group()
        assert (out, code) == ("started\n", 0)
        assert not group_alive(process.pid)

    run_with_spawner(body)
    assert processes_of(user) == []


def test_stop_interrupts_the_agent_then_kills_the_rest(users: UserFactory) -> None:
    user = users.create()
    script = "trap 'echo interrupted; exit 130' INT; setsid sleep 1000 & echo ready; wait"

    async def body(spawner: SpawnerClient) -> None:
        process = AgentProcess(spec(user, script), spawner)
        await process.start()
        lines = process.stdout()
        assert (await anext(lines)).data == b"ready\n"
        await process.stop()
        assert [line.data async for line in lines] == [b"interrupted\n"]
        assert process.poll() == 130

    run_with_spawner(body)
    assert processes_of(user) == []


def test_a_command_that_cannot_start_fails_with_a_reason(users: UserFactory) -> None:
    user = users.create()

    async def body(spawner: SpawnerClient) -> None:
        account = accounts.lookup(user.name)
        assert account is not None
        missing = ProcessSpec(["/nonexistent/claude"], ENV, Path("/"), account, b"")
        process = AgentProcess(missing, spawner)
        await process.start()
        _, err, code = await output(process)
        assert code == 127
        assert "could not start" in err and "/nonexistent/claude" in err

    run_with_spawner(body)


def test_a_request_larger_than_the_socket_takes_at_once_arrives_whole(
    users: UserFactory,
) -> None:
    user = users.create()
    big = {f"BIG{n}": str(n) * 100_000 for n in range(4)}  # together beyond the buffer

    async def body(spawner: SpawnerClient) -> None:
        account = accounts.lookup(user.name)
        assert account is not None
        script = 'echo "${#BIG0} ${#BIG3} ${BIG3%"${BIG3#?}"}"'
        process = AgentProcess(
            ProcessSpec(["sh", "-c", script], ENV | big, Path("/"), account, b""), spawner
        )
        await process.start()
        assert await output(process) == ("100000 100000 3\n", "", 0)

    run_with_spawner(body)


def test_jobs_stop_when_the_server_goes_away(users: UserFactory) -> None:
    user = users.create()

    async def body(spawner: SpawnerClient) -> None:
        script = "setsid sleep 1000 & echo ready; exec sleep 1000"
        process = AgentProcess(spec(user, script), spawner)
        await process.start()
        assert (await anext(process.stdout())).data == b"ready\n"
        await spawner.close()  # as the end of the server's connection does
        assert await asyncio.wait_for(process.wait(), 30) == 128 + signal.SIGINT
        assert not group_alive(process.pid)

    run_with_spawner(body)
    assert processes_of(user) == []
