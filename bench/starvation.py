"""One user's listings against another user's requests: how long alice's login, first
request with a new token and GET /jobs/{id} take while mallory keeps `--clients` GET
/jobs?limit=500 going over 500 jobs of `--kib` KiB prompts and outputs each.

    PYTHONPATH=. .venv/bin/python -m bench.starvation [--clients 10] [--seconds 20]
                                                      [--kib 10] [--server-src DIR/src]

As root (it makes two throwaway OS users). Prints alice's median and largest times with
no listing running and then under mallory's, and the server's peak resident memory.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import update
from tests.support.api import Api, home_of, make_git_repo
from tests.support.mounts import unmount_beneath
from tests.support.users import OsUser, UserFactory

from bench.api import add_jobs, job_row, server_pid, start_server
from claude_batch_server.store.db import Database
from claude_batch_server.store.tables import JOBS

Times = dict[str, list[float]]


async def mallory(url: str, token: str, stop: asyncio.Event, done: list[int]) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300) as client:
        while not stop.is_set():
            answer = await client.get("/jobs", params={"limit": 500})
            assert answer.status_code == 200, answer.text[:200]
            done[0] += 1


async def alice(url: str, user: OsUser, job: str, token: str, seconds: float) -> Times:
    times: Times = {"login": [], "new token": [], "GET /jobs/{id}": []}
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.monotonic()
            login = {"username": user.name, "password": user.password}
            fresh = (await client.post("/auth/login", json=login)).json()["token"]
            times["login"].append(time.monotonic() - started)
            for name, path, bearer in (
                ("new token", "/auth/me", fresh),
                ("GET /jobs/{id}", f"/jobs/{job}", token),
            ):
                started = time.monotonic()
                answer = await client.get(path, headers={"Authorization": f"Bearer {bearer}"})
                assert answer.status_code == 200, answer.text[:200]
                times[name].append(time.monotonic() - started)
            await asyncio.sleep(0.2)
    return times


async def attack(
    url: str,
    tokens: tuple[str, str],
    victim: OsUser,
    job: str,
    args: argparse.Namespace,
    clients: int,
) -> tuple[Times, int]:
    stop, done = asyncio.Event(), [0]
    tasks = [asyncio.create_task(mallory(url, tokens[0], stop, done)) for _ in range(clients)]
    times = await alice(url, victim, job, tokens[1], args.seconds)
    stop.set()
    await asyncio.gather(*tasks)
    return times, done[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--kib", type=int, default=10, help="of each job's prompt and output")
    parser.add_argument("--server-src", type=Path, help="run the server from this src/ tree")
    args = parser.parse_args()
    users = UserFactory()
    with tempfile.TemporaryDirectory(prefix="bench-starvation-", dir="/var/lib") as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        server = start_server(root, None, Path("/bin/true"), args.server_src)
        url = f"sqlite:///{root / 'data' / 'server.db'}"
        try:
            attacker = Api(server, users.create())
            attacker.ready_repository("m", make_git_repo(home_of(attacker.user), attacker.user))
            add_jobs(url, job_row(url, attacker.create_job("m", "x")["jobId"]), 499)
            database = Database(url)
            text = "p" * (args.kib * 1024)
            with database.connection() as connection:
                mine = JOBS.c.user == attacker.user.name
                connection.execute(update(JOBS).where(mine).values(prompt=text, output=text))
            database.close()
            victim = Api(server, users.create())
            victim.ready_repository("a", make_git_repo(home_of(victim.user), victim.user))
            job = victim.create_job("a", "y")["jobId"]
            tokens = (attacker.token, victim.token)
            for clients in (0, args.clients):
                times, done = asyncio.run(
                    attack(server.url, tokens, victim.user, job, args, clients)
                )
                cells = [f"{clients} listing clients ({done} pages)"]
                for name, values in times.items():
                    cells.append(
                        f"{name} p50 {statistics.median(values) * 1000:.0f} ms,"
                        f" max {max(values) * 1000:.0f} ms (n={len(values)})"
                    )
                print(" | ".join(cells), flush=True)
            with open(f"/proc/{server_pid(server)}/status") as status:
                print(next(line.strip() for line in status if line.startswith("VmHWM")))
            attacker.close()
            victim.close()
        finally:
            server.stop()
            users.cleanup()
            unmount_beneath(root)


if __name__ == "__main__":
    main()
