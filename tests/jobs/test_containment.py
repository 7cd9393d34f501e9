"""Every job in a control group of its own (issue 15): attacks run as real jobs, through the
real Claude Code CLI and the fake model, on this host's cgroup flavour (v1, with the v2
hierarchy beside it)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx

from tests.client.support import Cli
from tests.fake_anthropic import FakeAnthropic, bash, marker, text
from tests.jobs.conftest import JobWorldFactory
from tests.support.api import Api
from tests.support.server import wait_for

PIDS_MAX = 64
HOG = "memory-hog"
STORM = "fork-storm"
ESCAPE = "escape"
BURN = "cpu-burn"
DAEMON = "daemon"
# allocates 2 GiB and touches it: far past the limit
HOG_COMMAND = "python3 -c 'x = bytearray(2 << 30); x[::4096] = b\"1\" * len(x[::4096])'"
# CPU time, not wall time: the machine may be shared
BURN_COMMAND = "python3 -c 'import time; all(iter(lambda: time.process_time() < 2, False))'"


def processes_of(uid: int) -> list[str]:
    """Every live process of `uid`, from /proc: what is left of its jobs. Zombies are not
    counted: they have ended, and only wait for init (slow to reap on this host)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields["Uid"].split()[0]) == uid and not fields["State"].strip().startswith("Z"):
            found.append(f"{entry.name} {command.decode(errors='replace')}")
    return found


def tasks_of(uid: int) -> int:
    """Processes and threads of `uid`: what JOB_PIDS_MAX counts."""
    count = 0
    for line in processes_of(uid):
        try:
            count += sum(1 for _ in Path(f"/proc/{line.split()[0]}/task").iterdir())
        except OSError:
            continue
    return count


def running(api: Api, needle: str) -> bool:
    return any(needle in line for line in processes_of(api.user.uid))


def test_attacks_stay_inside_their_group(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.add_script(HOG, [bash(HOG_COMMAND), text("Done.")])
    fake_anthropic.add_script(STORM, [bash("for i in $(seq 1000); do sleep 300 & done; wait")])
    escape = (  # leave the group (refused), start a daemon, kill the job's first process
        "for procs in /sys/fs/cgroup/*/cgroup.procs; do echo $$ > $procs; done; "
        "setsid -f sh -c 'sleep 1001 & exit'; sleep 1; pkill -9 -u $(id -u) -f 'jobs[.]spawner'"
    )
    fake_anthropic.add_script(ESCAPE, [bash(escape), text("Escaped.")])
    world = job_world(JOB_MEMORY_MAX="400M", JOB_PIDS_MAX=str(PIDS_MAX))
    hogger, stormer, escaper = world.member(), world.member(), world.member()
    assert stormer.http.get("/health").json()["cgroup"] in {"v1", "v2"}

    storm = stormer.run(stormer.repo, f"Storm {marker(STORM)}")
    hog = hogger.run(hogger.repo, f"Hog {marker(HOG)}")
    escaped = escaper.run(escaper.repo, f"Escape {marker(ESCAPE)}")

    wait_for(lambda: tasks_of(stormer.user.uid) >= PIDS_MAX - 8, 60, "the storm to fill its group")
    live = wait_for(
        lambda: stormer.job(storm["jobId"])["resources"]["memoryPeakBytes"], 30, "live figures"
    )
    assert live > 0  # read from the group while the job runs
    for _ in range(5):  # the limit holds, and the server answers meanwhile
        assert tasks_of(stormer.user.uid) <= PIDS_MAX
        assert httpx.get(f"{world.server.url}/health", timeout=30).status_code == 200

    ended = hogger.wait_ended(hog["jobId"])
    assert ended["status"] == "failed"
    assert "JOB_MEMORY_MAX" in ended["error"] and "400 MiB" in ended["error"]
    assert ended["resources"]["memoryPeakBytes"] >= 300 * 2**20
    assert processes_of(hogger.user.uid) == []

    ended = escaper.wait_ended(escaped["jobId"])
    assert ended["status"] == "failed"  # its first process was killed
    assert processes_of(escaper.user.uid) == []  # the setsid daemon too

    assert stormer.http.post(f"/jobs/{storm['jobId']}/cancel").status_code == 202
    assert stormer.wait_ended(storm["jobId"])["status"] == "cancelled"
    assert processes_of(stormer.user.uid) == []


def test_cpu_time_is_measured_kept_and_shown(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    fake_anthropic.add_script(BURN, [bash(BURN_COMMAND), text("Burnt.")])
    world = job_world()
    alice = world.member()
    job = alice.run(alice.repo, f"Burn {marker(BURN)}")
    ended = alice.wait_ended(job["jobId"])
    assert ended["status"] == "completed", ended["error"]
    assert ended["resources"]["cpuSeconds"] >= 1.5
    assert ended["resources"]["memoryPeakBytes"] > 0

    cli = Cli(world.server, tmp_path / "home")
    cli.login(alice.user)
    shown = cli.ok("jobs", "show", job["jobId"])
    assert "s CPU" in shown and "MiB peak memory" in shown

    metrics = httpx.get(f"{world.server.url}/metrics", timeout=30).text
    assert "cbs_job_cpu_seconds_count 1.0" in metrics
    assert "cbs_job_memory_peak_bytes_count 1.0" in metrics

    # a second run adds its CPU time to the first's
    assert alice.http.post(
        f"/jobs/{job['jobId']}/resume", json={"prompt": f"Again {marker(BURN)}"}
    ).is_success
    again = alice.wait_ended(job["jobId"])
    assert again["resources"]["cpuSeconds"] >= ended["resources"]["cpuSeconds"] + 1.5


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_a_dead_servers_groups_are_killed_at_start(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic
) -> None:
    daemon = "setsid -f sh -c 'sleep 1002 & exit'; sleep 1000"
    fake_anthropic.add_script(DAEMON, [bash(daemon), text("Slept.")])
    world = job_world()
    alice = world.member()
    job = alice.run(alice.repo, f"Daemon {marker(DAEMON)}")
    wait_for(lambda: running(alice, "sleep 1002"), 60, "the daemon to start")

    # the server dies with every root process of its own, as a crash of the whole unit would:
    # nothing is left to end the job, only the job's processes
    assert world.server.process is not None
    spawners = _children(world.server.process.pid)
    reapers = [pid for spawner in spawners for pid in _children(spawner)]
    assert reapers
    for pid in (*spawners, *reapers):
        os.kill(pid, signal.SIGSTOP)
    world.server.kill()
    for pid in (*spawners, *reapers):
        os.kill(pid, signal.SIGKILL)
    assert running(alice, "sleep 1002")

    world.server.start()
    ended = alice.wait_ended(job["jobId"], deadline=60)
    assert ended["status"] == "failed" and "server stopped" in ended["error"]
    assert processes_of(alice.user.uid) == []
