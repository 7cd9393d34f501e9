"""Queue benchmark: how fast a started job reaches a running agent, and how many jobs per
second pass through the queue, on SQLite and on PostgreSQL.

    .venv/bin/python -m bench.queue [--jobs 200] [--slots 8] [--backends sqlite,postgres]
                                    [--sandbox auto|on|off] [--executor local|slurm]

As root (it makes a throwaway OS user and, for PostgreSQL, a throwaway cluster). The
agent is a stand-in that prints a stream-json result and exits at once, so the numbers
are the server's own: claim, workspace, spawning as the user, transcript, finish.

latency: from POST /jobs/{id}/start (client clock) to the first line the agent printed,
as stored in its transcript (server clock; same machine), with a free slot every time.
throughput: jobs started and completed per second with MAX_CONCURRENT_JOBS slots, from
the first start to the last end as the server recorded it.
DATA_DIR is made under --dir, by default /var/lib, where the server keeps it by default.
With --executor slurm, every job is a step of a throwaway single-node Slurm cluster
(tests/support/slurm.py), started with srun as the user.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from tests.support.api import Api, home_of, make_git_repo
from tests.support.mounts import unmount_beneath
from tests.support.postgres import running_cluster
from tests.support.server import LiveServer, wait_for
from tests.support.slurm import running_cluster as running_slurm
from tests.support.users import UserFactory

POLL = 0.25  # seconds between a batch client's questions whether its jobs are done
# seconds before the client first asks about a job it started: asked at once, its request
# would share the two cores with the very start being measured
FIRST_LOOK = 0.1
RESULT = (
    '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"ok",'
    '"session_id":"bench","total_cost_usd":0,"usage":{"input_tokens":1,"output_tokens":1}}'
)
STAND_IN = f"""#!/bin/sh
echo '{{"type":"system","subtype":"init","session_id":"bench"}}'
echo '{RESULT}'
"""


SLURM_JOB_MEMORY = "512M"  # what each job asks Slurm for: all slots fit on the node


def start_server(
    root: Path,
    database_url: str | None,
    slots: int,
    sandbox: str = "auto",
    executor: dict[str, str] | None = None,
) -> LiveServer:
    agent = root / "agent.sh"
    agent.write_text(STAND_IN)
    agent.chmod(0o755)
    data = root / "data"
    data.mkdir()
    env = {
        "CLAUDE_COMMAND": str(agent),
        "MAX_CONCURRENT_JOBS": str(slots),
        "LOG_FORMAT": "json",
        "JWT_KEY": "bench-" + "k" * 60,
        "JOB_SANDBOX": sandbox,
    }
    if database_url:
        env["DATABASE_URL"] = database_url
    return LiveServer(data, env | (executor or {})).start()


def first_output_at(api: Api, job_id: str) -> datetime:
    for event in api.events(job_id):
        if event["type"] == "system":
            return datetime.fromisoformat(event["time"])
    raise RuntimeError(f"job {job_id} printed nothing")


def latency(api: Api, jobs: int) -> list[float]:
    """Milliseconds from start to the agent's first output, one job at a time."""
    samples = []
    for i in range(jobs):
        job_id = api.create_job("bench", f"latency {i}")["jobId"]
        started = datetime.now(UTC)
        api.start(job_id)
        time.sleep(FIRST_LOOK)
        _check(api.wait_ended(job_id))
        samples.append((first_output_at(api, job_id) - started).total_seconds() * 1000)
    return samples


def _check(job: dict[str, object]) -> None:
    if job["status"] != "completed":
        raise RuntimeError(f"job {job['jobId']} ended {job['status']}: {job['error']}")


def throughput(api: Api, jobs: int) -> float:
    """Jobs per second from the first start (client clock) to the last job's end (server
    clock, same machine). The client waits as a batch client would, asking whether any of
    its jobs is still queued or running, not polling each job."""
    ids = [api.create_job("bench", f"throughput {i}")["jobId"] for i in range(jobs)]
    began = datetime.now(UTC)
    for job_id in ids:
        api.start(job_id)
    wait_for(lambda: _drained(api), 600, "the queue to drain", POLL)
    ends = []
    for job_id in ids:
        job = api.job(job_id)
        _check(job)
        ends.append(datetime.fromisoformat(job["completedAt"]))
    return jobs / (max(ends) - began).total_seconds()


def _drained(api: Api) -> bool:
    """Whether none of the caller's jobs is queued or running: one job asked for, not a page."""
    for status in ("queued", "running"):
        if api.http.get("/jobs", params={"status": status, "limit": 1}).json()["jobs"]:
            return False
    return True


def measure(backend: str, database_url: str | None, args: argparse.Namespace) -> str:
    jobs, slots = args.jobs, args.slots
    users = UserFactory()
    with tempfile.TemporaryDirectory(prefix="bench-queue-", dir=args.dir) as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        server = start_server(root, database_url, slots, args.sandbox, args.executor_env)
        try:
            api = Api(server, users.create())
            api.ready_repository("bench", make_git_repo(home_of(api.user), api.user))
            samples = latency(api, jobs)
            rate = throughput(api, jobs)
            api.close()
        finally:
            server.stop()
            users.cleanup()
            unmount_beneath(root)
    p99 = statistics.quantiles(samples, n=100)[98]
    return (
        f"| {backend} | {jobs} | {statistics.median(samples):.1f} | {p99:.1f} | "
        f"{slots} | {rate:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--dir", type=Path, default=Path("/var/lib"), help="where DATA_DIR goes")
    parser.add_argument("--sandbox", default="auto", help="JOB_SANDBOX of the server")
    parser.add_argument("--executor", choices=("local", "slurm"), default="local")
    args = parser.parse_args()
    print("| database | jobs | start → agent median (ms) | p99 (ms) | slots | jobs/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    with executor_env(args.executor) as args.executor_env:
        for backend in args.backends.split(","):
            if backend == "postgres":
                with running_cluster() as cluster:
                    print(measure(backend, cluster.create_database(), args), flush=True)
            else:
                print(measure(backend, None, args), flush=True)


@contextlib.contextmanager
def executor_env(executor: str) -> Iterator[dict[str, str]]:
    """The server's settings for `executor`, with a Slurm cluster while they are in use."""
    if executor == "local":
        yield {}
        return
    with running_slurm() as slurm:
        yield slurm.env | {"EXECUTOR": "slurm", "JOB_MEMORY_MAX": SLURM_JOB_MEMORY}


if __name__ == "__main__":
    main()
