"""What a job may write: its workspace, its user's Claude Code state and a temporary
folder of its own, enforced by Landlock (`landlock.py`) in the job's first process.

Every run gets the temporary folder, `DATA_DIR/tmp/<job id>` (the user's, mode 0700,
removed when the run ends), as TMPDIR, with the usual caches pointed into it, since
HOME is not writable under the sandbox. Inside `~/.claude` only the folders Claude Code
writes during a run are writable (found by tracing the CLI, 2.1.197): never
`settings.json`, `CLAUDE.md`, `commands/`, `agents/` or plugins, which would run the job's
code in the user's next session outside the sandbox. `~/.claude.json` stays read-only:
the CLI saves it through a temporary file beside it in HOME, which fails, and it goes on.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from claude_batch_server.accounts import Account
from claude_batch_server.jobs import landlock
from claude_batch_server.settings import SandboxMode

# beneath ~/.claude: the state Claude Code writes in a headless run
CLAUDE_STATE = (
    "projects",  # transcripts and memory, per working directory
    "sessions",
    "session-env",
    "shell-snapshots",
    "backups",  # of ~/.claude.json
    "todos",
    "tasks",
    "plans",
    "file-history",
    "statsig",
    "debug",
    "telemetry",
)
CREDENTIALS = ".credentials.json"  # rewritten when an OAuth login refreshes its token
DEVICES = ("/dev/null",)
# caches that would live in HOME: pip, Go's build cache and most tools use XDG's
CACHE_VARIABLES = ("XDG_CACHE_HOME", "npm_config_cache", "GOMODCACHE")


class Sandbox:
    def __init__(
        self,
        mode: SandboxMode,
        tmp_root: Path,
        count: Callable[[str, Path], None] | None = None,
    ) -> None:
        self._tmp_root = tmp_root
        self._count = count  # puts a run's tmp under its job's disk quota
        # Settings refuse `on` where the kernel offers no Landlock
        self.abi = landlock.abi() if mode is not SandboxMode.OFF else 0

    def describe(self) -> str:
        return f"landlock ABI {self.abi}" if self.abi else "off"

    def prepare(
        self, job_id: str, account: Account, workspace: Path
    ) -> tuple[dict[str, str], landlock.Confinement | None]:
        """Blocking, as root: the run's temporary folder; returns the environment that
        points at it and, with the sandbox on, what the job's process confines itself to."""
        tmp = self.tmp_path(job_id)
        self._tmp_root.mkdir(parents=True, exist_ok=True)
        self._tmp_root.chmod(0o711)  # users pass through to their own, never list it
        self.release(job_id)  # whatever a run that died with the server left
        tmp.mkdir(mode=0o700)
        if self._count is not None:
            self._count(job_id, tmp)
        os.chown(tmp, account.uid, account.gid)
        env = {"TMPDIR": str(tmp)} | {name: str(tmp / "cache") for name in CACHE_VARIABLES}
        if not self.abi:
            return env, None
        state = account.home / ".claude"
        kept = [str(state / name) for name in CLAUDE_STATE]
        writable = [str(workspace), str(tmp), *kept, str(state / CREDENTIALS), *DEVICES]
        return env, landlock.Confinement(writable=writable, make=[str(state), *kept])

    def release(self, job_id: str) -> None:
        """Removes the run's temporary folder (rmtree opens each level without following
        links, so what the job put there cannot lead it elsewhere)."""
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.tmp_path(job_id))

    def tmp_path(self, job_id: str) -> Path:
        return self._tmp_root / job_id
