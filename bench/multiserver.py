"""Two servers on one PostgreSQL: how soon a job started through a full server runs on the
other one, woken by a notification (LISTEN/NOTIFY) or, without one, by its tick.

    .venv/bin/python -m bench.multiserver [--jobs 30] [--baseline SRC]

As root (a throwaway OS user and PostgreSQL cluster). Server A may run one job and runs a
job that holds its slot; server B may run two (MAX_CONCURRENT_JOBS counts the jobs of all
servers). Each sample starts a job through A, which has no slot, so B must claim it.
claimed: from POST /jobs/{id}/start (client clock) to the job's `startedAt`, when B claimed
it (server clock; same machine). The agent is a stand-in that answers at once.
`--baseline SRC` measures servers run from another source tree as well (`git archive
<commit> src | tar -x -C DIR`, then SRC=DIR/src), e.g. the commit before notifications,
where only B's tick (2 s) notices the job.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from tests.support.api import Api, home_of, make_git_repo
from tests.support.mounts import unmount_beneath
from tests.support.postgres import running_cluster
from tests.support.server import LiveServer, wait_for
from tests.support.users import UserFactory

from bench.queue import RESULT

# answers at once, unless its prompt says to hold the slot
STAND_IN = f"""#!/bin/sh
if grep -q hold-the-slot; then exec sleep 1000; fi
echo '{{"type":"system","subtype":"init","session_id":"bench"}}'
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
            api.close()
        finally:
            second.stop()
            first.stop()
            users.cleanup()
            unmount_beneath(root)
    quick = sum(ms < 100 for ms in claimed)
    return (
        f"| {label} | {args.jobs} | {statistics.median(claimed):.1f} | {max(claimed):.1f} | "
        f"{quick} |"
    )


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
