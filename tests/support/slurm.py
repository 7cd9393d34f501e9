"""A throwaway single-node Slurm cluster, started and stopped by the tests.

`munged` with a key and a socket of its own, `slurmctld -D` and `slurmd -D` with a
`slurm.conf` of their own (SLURM_CONF): nothing of the host's /etc/slurm or /run/munge is
read or touched, so it lives beside a cluster of the host and beside the clusters of
other test sessions on the same machine. Each cluster names its node uniquely: Slurm's
cgroup v1 plugin keeps its groups in /sys/fs/cgroup/<controller>/slurm_<node>, apart from
the server's own `claude-batch-*` groups and from another cluster's.

With `accounting`, the cluster keeps its jobs' records as a site's does: a MariaDB of its
own (its datadir, socket and loopback port in the cluster's folder; the host's MariaDB
service is neither needed nor touched), `slurmdbd -D` in front of it, and slurmctld
sending it every job and step.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.server import wait_for

SBIN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "srun", "sinfo", "squeue", "scancel")
ACCOUNTING_BINARIES = ("slurmdbd", "sacct", "sacctmgr", "mariadbd", "mariadb-install-db", "mariadb")
START_DEADLINE = 30.0
STOP_DEADLINE = 15.0
CGROUP_ROOT = Path("/sys/fs/cgroup")

SLURM_CONF = """\
ClusterName=cbstest
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/state/slurmctld.pid
SlurmdPidFile={root}/spool/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
EnforcePartLimits=ALL
{accounting}
JobAcctGatherType=jobacct_gather/cgroup
JobAcctGatherFrequency=task=1
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
FirstJobId={first_job}
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName={node} NodeHostname=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb}
PartitionName=batch Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""

NO_ACCOUNTING = "AccountingStorageType=accounting_storage/none"
ACCOUNTING = """\
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={dbd_port}
AccountingStoragePass={munge_socket}"""

SLURMDBD_CONF = """\
AuthType=auth/munge
AuthInfo=socket={munge_socket}
DbdHost=localhost
DbdPort={dbd_port}
SlurmUser=root
PidFile={root}/state/slurmdbd.pid
LogFile={root}/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={db_port}
StorageUser=slurm
StoragePass={password}
StorageLoc=slurm_acct_db
"""

CGROUP_CONF = """\
CgroupPlugin=cgroup/v1
ConstrainRAMSpace=yes
ConstrainSwapSpace=no
"""


def missing_binaries(accounting: bool = False) -> list[str]:
    names = BINARIES + (ACCOUNTING_BINARIES if accounting else ())
    return [name for name in names if shutil.which(name, path=SBIN_PATH) is None]


def _free_ports(count: int) -> list[int]:
    """`count` different ports free on every address (the daemons listen on all): held
    together while they are chosen, so that none is handed out twice."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def _memory_mb() -> int:
    """The node's memory for Slurm: a little under the machine's, as slurmd measures it."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 - 256
    raise RuntimeError("no MemTotal in /proc/meminfo")


class SlurmCluster:
    def __init__(self, root: Path, extra: str = "", accounting: bool = False) -> None:
        """`extra`: lines added to slurm.conf; `accounting`: with slurmdbd and its MariaDB."""
        self.root = root
        self._extra = extra
        self.accounting = accounting
        self.node = f"cbs{secrets.token_hex(4)}"
        self.conf = root / "etc" / "slurm.conf"
        self.munge_socket = root / "munge" / "socket"
        self.memory_mb = _memory_mb()
        self._processes: list[subprocess.Popen[bytes]] = []

    @property
    def env(self) -> dict[str, str]:
        """What the server (and a test's own srun, squeue, scancel) needs to find it."""
        return {"SLURM_CONF": str(self.conf)}

    def start(self) -> None:
        for name, mode in (("etc", 0o755), ("munge", 0o755), ("state", 0o700)):
            (self.root / name).mkdir(mode=mode)
        for name in ("spool", "log"):
            (self.root / name).mkdir(mode=0o700)
        key = self.root / "munge.key"
        subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True, env=self._env())
        self._daemon(
            "munged",
            "--foreground",
            "--force",  # as root, in a folder of /var/tmp
            f"--socket={self.munge_socket}",
            f"--key-file={key}",
            f"--log-file={self.root / 'log' / 'munged.log'}",
            f"--pid-file={self.root / 'munge' / 'munged.pid'}",
            f"--seed-file={self.root / 'munge' / 'seed'}",
        )
        wait_for(self.munge_socket.exists, START_DEADLINE, "munged's socket")
        ctld_port, slurmd_port, dbd_port, db_port = _free_ports(4)
        accounting = (
            ACCOUNTING.format(dbd_port=dbd_port, munge_socket=self.munge_socket)
            if self.accounting
            else NO_ACCOUNTING
        )
        self.conf.write_text(
            SLURM_CONF.format(
                root=self.root,
                ctld_port=ctld_port,
                slurmd_port=slurmd_port,
                munge_socket=self.munge_socket,
                first_job=1000 + secrets.randbelow(60_000_000),
                node=self.node,
                cpus=os.cpu_count() or 1,
                memory_mb=self.memory_mb,
                accounting=accounting,
            )
            + self._extra
        )
        (self.root / "etc" / "cgroup.conf").write_text(CGROUP_CONF)
        for path in self.conf.parent.iterdir():
            path.chmod(0o644)  # srun reads them as the job's user
        if self.accounting:
            self._start_accounting(dbd_port, db_port)
        self._daemon("slurmctld", "-D", "-i")
        self._daemon("slurmd", "-D", "-N", self.node)
        wait_for(self._idle, START_DEADLINE, f"Slurm node {self.node} to be idle")

    def _start_accounting(self, dbd_port: int, db_port: int) -> None:
        """MariaDB with a user of slurmdbd's own (its password only in slurmdbd.conf, 0600),
        then slurmdbd, with the cluster registered before slurmctld starts."""
        db = self.root / "db"
        db.mkdir(mode=0o700)
        socket_path = db / "socket"
        self.run(
            "mariadb-install-db",
            "--no-defaults",
            "--user=root",
            f"--datadir={db / 'data'}",
            "--auth-root-authentication-method=socket",  # root enters by its unix socket
            "--skip-test-db",
        )
        self._daemon(
            "mariadbd",
            "--no-defaults",
            "--user=root",
            f"--datadir={db / 'data'}",
            f"--socket={socket_path}",
            f"--pid-file={db / 'mariadbd.pid'}",
            f"--port={db_port}",
            "--bind-address=127.0.0.1",
            "--innodb-buffer-pool-size=32M",
            f"--log-error={self.root / 'log' / 'mariadbd.log'}",
        )
        wait_for(socket_path.exists, START_DEADLINE, "MariaDB's socket")
        password = secrets.token_urlsafe(24)
        sql = (
            f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{password}';"
            " GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
        )
        # the password on stdin, never in argv
        self.run("mariadb", "--no-defaults", f"--socket={socket_path}", "--user=root", stdin=sql)
        dbd_conf = self.conf.parent / "slurmdbd.conf"
        dbd_conf.touch(mode=0o600)  # slurmdbd refuses a readable one: it holds the password
        dbd_conf.write_text(
            SLURMDBD_CONF.format(
                root=self.root,
                munge_socket=self.munge_socket,
                dbd_port=dbd_port,
                db_port=db_port,
                password=password,
            )
        )
        self._daemon("slurmdbd", "-D")
        wait_for(self._dbd_answers, START_DEADLINE, "slurmdbd to answer")
        self.run("sacctmgr", "-i", "add", "cluster", "cbstest")

    def _dbd_answers(self) -> bool:
        self._check_alive()
        try:
            self.run("sacctmgr", "-n", "list", "cluster")
        except subprocess.CalledProcessError:
            return False
        return True

    def _check_alive(self) -> None:
        for process in self._processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args[0]} exited: {self.logs()}")  # type: ignore[index]

    def _env(self) -> dict[str, str]:
        return {"PATH": SBIN_PATH, "SLURM_CONF": str(self.conf)}

    def _daemon(self, *argv: str) -> None:
        log = open(self.root / "log" / f"{argv[0]}.out", "wb")  # noqa: SIM115 - the daemon's
        with log:
            process = subprocess.Popen(
                argv, env=self._env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._processes.append(process)

    def _idle(self) -> bool:
        self._check_alive()
        states = self.run("sinfo", "-h", "-N", "-o", "%T", check=False)
        return states.strip() == "idle"

    def unreachable_conf(self, folder: Path) -> Path:
        """A copy of the configuration whose controller's port nobody listens on."""
        folder.mkdir(mode=0o755)
        text = self.conf.read_text()
        port = next(line for line in text.splitlines() if line.startswith("SlurmctldPort="))
        text = text.replace(port, f"SlurmctldPort={_free_ports(1)[0]}")
        (folder / "slurm.conf").write_text(text + "MessageTimeout=2\n")  # give up soon
        shutil.copy(self.conf.parent / "cgroup.conf", folder)
        return folder / "slurm.conf"

    def pause_node(self, paused: bool = True) -> None:
        """Stops (or continues) slurmd: to the controller, its node no longer answers."""
        slurmd = next(p for p in self._processes if p.args[0] == "slurmd")  # type: ignore[index]
        slurmd.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)

    def run(self, *argv: str, check: bool = True, stdin: str | None = None) -> str:
        """A Slurm command against this cluster, as root; returns its output."""
        done = subprocess.run(
            argv,
            input=stdin,
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=30,
            check=check,
        )
        return done.stdout

    def jobs(self, prefix: str = "cbs-") -> list[str]:
        """`id name state` of every job still queued or running whose name has `prefix`."""
        out = self.run("squeue", "-h", "-o", "%i %j %T")
        return [line for line in out.splitlines() if line.split()[1].startswith(prefix)]

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted((self.root / "log").iterdir())
        )

    def stop(self) -> None:
        for process in reversed(self._processes):  # slurmd, slurmctld(, slurmdbd, mariadbd), munged
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)  # should it be paused
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._remove_cgroups()

    def _remove_cgroups(self) -> None:
        """The (empty) control groups slurmd made for its node, deepest first."""
        for controller in CGROUP_ROOT.iterdir():
            top = controller / f"slurm_{self.node}"
            if top.is_dir():
                groups = [Path(path) for path, _, _ in os.walk(top)]
                for group in sorted(groups, key=lambda path: len(path.parts), reverse=True):
                    try:
                        group.rmdir()
                    except OSError:
                        continue


@contextmanager
def running_cluster(extra: str = "", accounting: bool = False) -> Iterator[SlurmCluster]:
    root = Path(tempfile.mkdtemp(prefix="cbs-slurm-", dir="/var/tmp"))
    root.chmod(0o755)  # users reach slurm.conf and munge's socket
    cluster = SlurmCluster(root, extra, accounting)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
