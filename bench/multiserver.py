"""Two servers on one PostgreSQL: how soon a job started through a full server runs on the
other one, woken by a notification (LISTEN/NOTIFY) or, without one, by its tick; and how
soon a follower on one server sees the lines of a job the other runs.

    .venv/bin/python -m bench.multiserver [--jobs 30] [--baseline SRC]

As root (a throwaway OS user and PostgreSQL cluster). Server A may run one job and runs a
job that holds its slot; server B may run two (MAX_CONCURRENT_JOBS counts the jobs of all
servers). Each sample starts a job through A, which has no slot, so B must claim it.
claimed: from POST /jobs/{id}/start (client clock) to the job's `startedAt`, when B claimed
it (server clock; same machine). The agent is a stand-in that answers at once.
`--baseline SRC` measures servers run from another source tree as well (`git archive
<commit> src | tar -x -C DIR`, then SRC=DIR/src), e.g. the commit before notifications,
where only B's tick (2 s) notices the job.
followed: a job that A runs prints a line every 0.2 s; from A's stamp on each line (when
it read it) to its arrival at a follower of the job's event stream through B (client
clock). Without notifications B's follower looks every second.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from tests.support.api import Api, home_of, make_git_repo
from tests.support.mounts import unmount_beneath
from tests.support.postgres import running_cluster
from tests.support.server import LiveServer, wait_for
from tests.support.users import UserFactory

from bench.queue import RESULT

TICKS = 20  # lines of the job that is followed, TICK_EVERY seconds apart
# answers at once, unless its prompt says to hold the slot, or to print lines a while
STAND_IN = f"""#!/bin/sh
prompt=$(cat)
case $prompt in *hold-the-slot*) exec sleep 1000;; esac
echo '{{"type":"system","subtype":"init","session_id":"bench"}}'
case $prompt in *tick-lines*)
    for i in $(seq {TICKS}); do sleep 0.2; echo '{{"type":"system","subtype":"tick"}}'; done;;
esac
echo '{RESULT}'
"""


def start_pair(root: Path, url: str, source: Path | None) -> tuple[LiveServer, LiveServer]:
    agent = root / "agent.sh"
    agent.write_text(STAND_IN)
    agent.chmod(0o755)
    data = root / "data"
    data.mkdir()
    env = {
        "CLAUDE_COMMAND": str(agent),
        "DATABASE_URL": url,
        "COW_STRATEGY": "copy",  # overlay mounts are private to each server process
        "JWT_KEY": "bench-" + "k" * 60,
    }
    if source is not None:
        env["PYTHONPATH"] = str(source)
    first = LiveServer(data, {**env, "MAX_CONCURRENT_JOBS": "1"}).start()
    second = LiveServer(data, {**env, "MAX_CONCURRENT_JOBS": "2"}).start()
    return first, second


def samples(through_a: Api, jobs: int) -> list[float]:
    """Milliseconds from the start through A to B's claim."""
    claimed = []
    for i in range(jobs):
        job_id = through_a.create_job("bench", f"sample {i}")["jobId"]
        started = datetime.now(UTC)
        through_a.start(job_id)
        time.sleep(0.1)  # not asked at once: its request would share the cores with the start
        job = through_a.wait_ended(job_id)
        if job["status"] != "completed":
            raise RuntimeError(f"job {job_id} ended {job['status']}: {job['error']}")
        claimed.append((datetime.fromisoformat(job["startedAt"]) - started).total_seconds())
    return [s * 1000 for s in claimed]


def follow_latency(through_a: Api, through_b: Api) -> list[float]:
    """Milliseconds from a line of a job that A runs (as A stamped it on reading it) to its
    arrival at a follower of the job's event stream on B (client clock, same machine)."""
    job_id = through_a.create_job("bench", "tick-lines")["jobId"]
    arrivals: list[tuple[datetime, dict[str, Any]]] = []

    def read() -> None:
        path = f"/jobs/{job_id}/events"
        with through_b.http.stream("GET", path, timeout=httpx.Timeout(120)) as response:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    arrivals.append((datetime.now(UTC), json.loads(line.removeprefix("data:"))))

    reader = threading.Thread(target=read)
    reader.start()
    wait_for(lambda: through_b.job(job_id)["status"] == "created", 10, "the follower")
    through_a.start(job_id)  # A has a free slot: it claims the job itself
    reader.join(120)
    return [
        (at - datetime.fromisoformat(event["time"])).total_seconds() * 1000
        for at, event in arrivals
        if event.get("type") == "system" and event["event"].get("subtype") == "tick"
    ]


def measure(label: str, source: Path | None, args: argparse.Namespace) -> str:
    users = UserFactory()
    with (
        running_cluster() as cluster,
        tempfile.TemporaryDirectory(prefix="bench-multi-", dir=args.dir) as tmp,
    ):
        root = Path(tmp)
        root.chmod(0o755)
        first, second = start_pair(root, cluster.create_database(), source)
        try:
            api = Api(first, users.create())
            api.ready_repository("bench", make_git_repo(home_of(api.user), api.user))
            holder = api.run("bench", "hold-the-slot")["jobId"]
            api.wait_status(holder, {"running"})
            claimed = samples(api, args.jobs)
            api.http.post(f"/jobs/{holder}/cancel")
            wait_for(lambda: api.job(holder)["status"] == "cancelled", 60, "the holder's end")
            followed: list[float] = []
            if source is None:  # before them, event pages failed on PostgreSQL
                followed = follow_latency(api, Api(second, api.user))
            api.close()
        finally:
            second.stop()
            first.stop()
            users.cleanup()
            unmount_beneath(root)
    quick = sum(ms < 100 for ms in claimed)
    line = (
        f"| {label} | {args.jobs} | {statistics.median(claimed):.1f} | {max(claimed):.1f} | "
        f"{quick} |"
    )
    if followed:
        median, worst = statistics.median(followed), max(followed)
        line += f"\n\nfollowed through B: {len(followed)} lines, median {median:.1f} ms"
        line += f", max {worst:.1f} ms"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--dir", type=Path, default=Path("/var/lib"), help="where DATA_DIR goes")
    parser.add_argument("--baseline", type=Path, help="a source tree to compare with")
    args = parser.parse_args()
    print("| servers | jobs | start on A → claimed by B, median (ms) | max (ms) | under 100 ms |")
    print("| --- | --- | --- | --- | --- |")
    print(measure("this tree (notifications)", None, args), flush=True)
    if args.baseline is not None:
        print(measure(f"{args.baseline} (tick)", args.baseline, args), flush=True)


if __name__ == "__main__":
    main()
