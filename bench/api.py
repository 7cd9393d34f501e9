"""API read-path benchmark: this server's reads beside a bare FastAPI stack, and the SSE
fan-out of one running job to many followers.

    .venv/bin/python -m bench.api [--seconds 10] [--rounds 3] [--backends sqlite,postgres]
                                  [--followers 500] [--events 200] [--skip-reads] [--skip-sse]
                                  [--server-src DIR/src]

As root (it makes a throwaway OS user and, for PostgreSQL, a throwaway cluster). Needs `wrk`.

Reads: `wrk -t2 -c50` with a valid bearer token, against `GET /jobs/{id}`, `GET /auth/me`
and `GET /jobs` (the first page, of a user with 10,000 jobs) of the real server (one uvicorn
worker, its real settings), each right after the same load against the reference: a bare
FastAPI app (one uvicorn worker, the same uvicorn options) whose one route checks an HS256
token and reads one SQLite row. Run in turns, so the machine's other load hits both alike;
the ratio is the real server's requests per second over the reference's, per turn.

SSE: `--followers` clients follow one job's events (`GET /jobs/{id}/events`), then the job
starts; its agent (a stand-in) prints `--events` events, one every `--interval` seconds.
Delivery latency: from the event's `time` (when the server read the line) to its arrival at
each follower (same machine, same clock). Every follower must receive every event, in order.
RSS: the server process's resident memory before the followers connect, with them all
connected, and at the end (VmHWM: its peak).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
import jwt
from fastapi import Depends, FastAPI, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import create_engine, insert, select
from tests.support.api import Api, home_of, make_git_repo
from tests.support.mounts import unmount_beneath
from tests.support.postgres import running_cluster
from tests.support.server import REPO_ROOT, LiveServer, free_port, wait_for
from tests.support.users import UserFactory

from claude_batch_server.store.db import Database
from claude_batch_server.store.tables import JOBS, Base

KEY = "bench-" + "k" * 60
JOBS_OF_USER = 10_000
WRK = ["wrk", "-t2", "-c50"]
ROUTES = ("/jobs/{id}", "/auth/me", "/jobs")
_BEARER = HTTPBearer()


# --- the reference: a bare FastAPI route that checks an HS256 token and reads one row ---


def bare_app() -> FastAPI:
    """`uvicorn --factory bench.api:bare_app`, with BENCH_DB and BENCH_KEY set."""
    database, key = os.environ["BENCH_DB"], os.environ["BENCH_KEY"]
    local = threading.local()
    app = FastAPI()

    def connection() -> sqlite3.Connection:
        if not hasattr(local, "connection"):
            local.connection = sqlite3.connect(database, check_same_thread=False)
            local.connection.row_factory = sqlite3.Row
        db: sqlite3.Connection = local.connection
        return db

    @app.get("/jobs/{job_id}")
    def job(
        job_id: str, credentials: Annotated[HTTPAuthorizationCredentials, Depends(_BEARER)]
    ) -> dict[str, Any]:
        try:
            claims = jwt.decode(credentials.credentials, key, algorithms=["HS256"])
        except jwt.PyJWTError as error:
            raise HTTPException(401, "invalid token") from error
        row = (
            connection()
            .execute("SELECT * FROM jobs WHERE id = ? AND user = ?", (job_id, claims["sub"]))
            .fetchone()
        )
        if row is None:
            raise HTTPException(404, "not found")
        return dict(row)

    return app


def start_bare(root: Path, database: Path) -> subprocess.Popen[bytes]:
    port = free_port()
    log = (root / "bare.log").open("ab")
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "--factory", "bench.api:bare_app"),
            *("--host", "127.0.0.1", "--port", str(port), "--loop", "asyncio"),
            *("--no-access-log", "--log-level", "warning"),
        ],
        env={**os.environ, "BENCH_DB": str(database), "BENCH_KEY": KEY},
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    process.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    wait_for(lambda: _answers(f"http://127.0.0.1:{port}/docs"), 30, "the bare stack")
    return process


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


# --- data: a user with 10,000 jobs ---


def start_server(
    root: Path, database_url: str | None, agent: Path, source: Path | None
) -> LiveServer:
    """The server of this checkout, or of the package tree `source` (another version's
    src/, e.g. `git archive main src | tar -x -C DIR`), for a before and after."""
    data = root / "data"
    data.mkdir()
    env = {"CLAUDE_COMMAND": str(agent), "JWT_KEY": KEY, "LOG_FORMAT": "json"}
    if database_url:
        env["DATABASE_URL"] = database_url
    command = None
    if source is not None:
        run = (
            f"import sys; sys.path.insert(0, {str(source)!r}); sys.argv = ['serve', 'serve']; "
            "from claude_batch_server.cli import main; main()"
        )
        command = [sys.executable, "-c", run]
    return LiveServer(data, env, command=command).start()


def add_jobs(url: str, template: dict[str, Any], count: int) -> None:
    """`count` more jobs like `template`, older than it, ended, in one transaction."""
    database = Database(url)
    now = template["created_at"]
    rows = []
    for n in range(count):
        created = now - timedelta(seconds=n + 1)
        rows.append(
            template
            | {
                "id": uuid.uuid4().hex,
                "prompt": f"bench job {n}: " + "tidy the code " * 5,
                "status": "completed",
                "created_at": created,
                "queued_at": created,
                "started_at": created,
                "completed_at": created + timedelta(milliseconds=500),
                "output": "done " * 20,
                "exit_code": 0,
                "runs": 1,
                "num_turns": 3,
                "workspace_removed": True,
            }
        )
    with database.connection() as connection:
        connection.execute(insert(JOBS), rows)
    database.close()


def job_row(url: str, job_id: str) -> dict[str, Any]:
    database = Database(url)
    with database.read_connection() as connection:
        row = connection.execute(select(JOBS).where(JOBS.c.id == job_id)).mappings().one()
    database.close()
    return dict(row)


def bare_database(path: Path, row: dict[str, Any]) -> None:
    """The reference's SQLite file: the jobs table of the server's schema, with the row."""
    engine = create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine, tables=[JOBS])
    with engine.begin() as connection:
        connection.exec_driver_sql("PRAGMA journal_mode=WAL")
        connection.execute(insert(JOBS), [row])
    engine.dispose()


# --- wrk ---


@dataclass
class Load:
    rate: float  # requests per second
    p50_ms: float
    p99_ms: float


def wrk(url: str, token_script: Path, seconds: int) -> Load:
    """The token goes in through a script, not argv, where any user could read it."""
    output = subprocess.run(
        [*WRK, f"-d{seconds}s", "--latency", "-s", str(token_script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # a timeout (over wrk's 2 s) is the load's; any other failure is the server's
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+)", output)
    if "Non-2xx" in output or (errors and any(int(n) for n in errors.groups())):
        raise RuntimeError(f"{url}: not every request succeeded:\n{output}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    return Load(rate, _percentile(output, "50%"), _percentile(output, "99%"))


def _percentile(output: str, label: str) -> float:
    match = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    if match is None:
        return float("nan")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]
    return float(match.group(1)) * scale


def token_script(root: Path, token: str) -> Path:
    script = root / "token.lua"
    script.touch(mode=0o600)
    script.write_text(f'wrk.headers["Authorization"] = "Bearer {token}"\n')
    return script


def reads(backend: str, root: Path, api: Api, url: str, args: argparse.Namespace) -> list[str]:
    """The table's rows for one backend."""
    job_id = api.create_job("bench", "the job read by GET /jobs/{id}")["jobId"]
    template = job_row(url, job_id)
    add_jobs(url, template, JOBS_OF_USER - 1)
    assert len(api.http.get("/jobs", params={"limit": 500}).json()["jobs"]) == 500
    bare_db = root / "bare.db"
    bare_database(bare_db, template)
    bare = start_bare(root, bare_db)
    script = token_script(root, api.token)
    bare_url = f"{bare.url}/jobs/{job_id}"  # type: ignore[attr-defined]
    paths = {route: route.replace("{id}", job_id) for route in ROUTES}
    try:
        for path in paths.values():  # warm up both
            wrk(bare_url, script, 2)
            wrk(api.server.url + path, script, 2)
        results: dict[str, list[tuple[Load, Load]]] = {route: [] for route in ROUTES}
        for _ in range(args.rounds):
            for route, path in paths.items():
                reference = wrk(bare_url, script, args.seconds)
                ours = wrk(api.server.url + path, script, args.seconds)
                results[route].append((reference, ours))
    finally:
        bare.terminate()
        bare.wait()
    return [_row(backend, route, pairs) for route, pairs in results.items()]


def _row(backend: str, route: str, pairs: list[tuple[Load, Load]]) -> str:
    ratios = [ours.rate / reference.rate for reference, ours in pairs]
    bare = statistics.median(r.rate for r, _ in pairs)
    ours = statistics.median(o.rate for _, o in pairs)
    p99 = statistics.median(o.p99_ms for _, o in pairs)
    return (
        f"| {backend} | `GET {route}` | {bare:,.0f} | {ours:,.0f} | {p99:.1f} | "
        f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) |"
    )


# --- SSE fan-out ---


def ticking_agent(root: Path, events: int, interval: float) -> Path:
    """A stand-in agent: waits for the go file, then prints `events` events, one every
    `interval` seconds, and a result."""
    agent = root / "agent.sh"
    result = (
        '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"ok",'
        '"session_id":"bench","total_cost_usd":0,"usage":{"input_tokens":1,"output_tokens":1}}'
    )
    agent.write_text(
        "#!/bin/sh\n"
        'echo \'{"type":"system","subtype":"init","session_id":"bench"}\'\n'
        f"i=0; while [ $i -lt {events} ]; do i=$((i+1)); "
        """echo "{\\"type\\":\\"assistant\\",\\"message\\":{\\"content\\":"""
        """[{\\"type\\":\\"text\\",\\"text\\":\\"tick $i\\"}]}}"; """
        f"sleep {interval}; done\n"
        f"echo '{result}'\n"
    )
    agent.chmod(0o755)
    return agent


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB of the server process."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def server_pid(server: LiveServer) -> int:
    """The uvicorn process: the launched command itself (claude-batch-server serve)."""
    assert server.process is not None
    return server.process.pid


async def follower(
    host: str, port: int, path: str, token: str, connected: asyncio.Event
) -> list[tuple[int, float, float]]:
    """(seq, event time, arrival) of every event, read off a raw socket (a parser in the
    client would share the cores with the server under test)."""
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(head.decode(errors="replace"))
    connected.set()
    seen: list[tuple[int, float, float]] = []
    chunked = b"chunked" in head.lower()
    buffer = b""
    while True:
        data = await _read_chunk(reader) if chunked else await reader.read(1 << 16)
        if not data:
            break
        arrived = time.time()
        buffer += data
        *frames, buffer = buffer.split(b"\r\n\r\n")
        for frame in frames:
            if b"event: end" in frame:
                writer.close()
                return seen
            for line in frame.split(b"\r\n"):
                if line.startswith(b"data: "):
                    event = json.loads(line[6:])
                    when = datetime.fromisoformat(event["time"]).timestamp()
                    seen.append((event["seq"], when, arrived))
    writer.close()
    return seen


async def _read_chunk(reader: asyncio.StreamReader) -> bytes:
    size = int((await reader.readline()).strip() or b"0", 16)
    if size == 0:
        return b""
    data = await reader.readexactly(size + 2)
    return data[:-2]


async def fan_out(api: Api, job_id: str, followers: int) -> tuple[list[list[Any]], int]:
    host, port = "127.0.0.1", api.server.port
    path = f"/jobs/{job_id}/events"
    flags = [asyncio.Event() for _ in range(followers)]
    tasks = [asyncio.create_task(follower(host, port, path, api.token, flag)) for flag in flags]
    await asyncio.wait_for(asyncio.gather(*(flag.wait() for flag in flags)), 120)
    connected_rss = rss_kib(server_pid(api.server))[0]
    await asyncio.to_thread(api.start, job_id)
    return list(await asyncio.gather(*tasks)), connected_rss


def sse(api: Api, args: argparse.Namespace) -> str:
    pid = server_pid(api.server)
    job_id = api.create_job("bench", "followed")["jobId"]
    before = rss_kib(pid)[0]
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # the plain loop: slower, so the figures are on the safe side
        runner = asyncio.run
    seen, connected = runner(fan_out(api, job_id, args.followers))
    after, peak = rss_kib(pid)
    job = api.wait_ended(job_id)
    expected = args.events + 4  # the run's start, init, the ticks, result, the run's end
    latencies = []
    for events in seen:
        seqs = [seq for seq, _, _ in events]
        if seqs != list(range(1, len(seqs) + 1)) or len(seqs) < args.events:
            raise RuntimeError(f"a follower saw {len(seqs)} events, out of order or missing")
        latencies += [(arrived - when) * 1000 for _, when, arrived in events]
    p = statistics.quantiles(latencies, n=100)
    return (
        f"| {args.followers} | {len(seen[0])} (≥ {expected - 2}) | {job['status']} | "
        f"{statistics.median(latencies):.1f} | {p[98]:.1f} | {max(latencies):.1f} | "
        f"{before / 1024:.0f} | {connected / 1024:.0f} | {after / 1024:.0f} | {peak / 1024:.0f} |"
    )


# --- the run ---


def measure(backend: str, database_url: str | None, args: argparse.Namespace) -> list[str]:
    users = UserFactory()
    with tempfile.TemporaryDirectory(prefix="bench-api-", dir=args.dir) as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        agent = ticking_agent(root, args.events, args.interval)
        server = start_server(root, database_url, agent, args.server_src)
        url = database_url or f"sqlite:///{root / 'data' / 'server.db'}"
        try:
            api = Api(server, users.create())
            api.ready_repository("bench", make_git_repo(home_of(api.user), api.user))
            lines = []
            if not args.skip_reads:
                lines += reads(backend, root, api, url, args)
            if not args.skip_sse:
                lines.append("SSE " + backend + " " + sse(api, args))
            api.close()
        finally:
            server.stop()
            users.cleanup()
            unmount_beneath(root)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="of each wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", default="sqlite")
    parser.add_argument("--followers", type=int, default=500)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between events")
    parser.add_argument("--skip-reads", action="store_true")
    parser.add_argument("--skip-sse", action="store_true")
    parser.add_argument("--dir", type=Path, default=Path("/var/lib"), help="where DATA_DIR goes")
    parser.add_argument("--server-src", type=Path, help="run the server from this src/ tree")
    args = parser.parse_args()
    lines = []
    for backend in args.backends.split(","):
        if backend == "postgres":
            with running_cluster() as cluster:
                lines += measure(backend, cluster.create_database(), args)
        else:
            lines += measure(backend, None, args)
    print(f"wrk -t2 -c50, {args.rounds} rounds of {args.seconds:g} s, in turns, medians:")
    print("| database | route | bare stack req/s | this server req/s | p99 ms | ratio (range) |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for line in lines:
        if not line.startswith("SSE "):
            print(line)
    print()
    print(f"SSE: {args.followers} followers of one job, an event every {args.interval:g} s:")
    print(
        "| database | followers | events each | job | latency p50 ms | p99 ms | max ms | "
        "RSS before MiB | connected MiB | after MiB | peak MiB |"
    )
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for line in lines:
        if line.startswith("SSE "):
            _, backend, rest = line.split(" ", 2)
            print(f"| {backend} {rest}")


if __name__ == "__main__":
    main()
