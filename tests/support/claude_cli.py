"""The project's Claude Code CLI (``make agent`` puts it in ``$AGENT_DIR/node_modules``):
finding it, its env, running it.

The server runs the CLI as the job's OS user; tests that run it directly do the same
through :func:`run_claude` (root may not pass ``--dangerously-skip-permissions``).
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# the Makefile's default, where every job's user can run it
AGENT_DIR = Path(os.environ.get("AGENT_DIR", "/usr/local/lib/claude-batch-server"))
PROJECT_CLAUDE = AGENT_DIR / "node_modules" / ".bin" / "claude"
FAKE_API_KEY = "sk-ant-fake-test-key"
USER_PATH = "/usr/local/bin:/usr/bin:/bin"


def claude_path() -> Path | None:
    """The project's CLI if ``make agent`` put it there, else ``claude`` on PATH, else None."""
    if PROJECT_CLAUDE.exists() and os.access(PROJECT_CLAUDE, os.X_OK):
        return PROJECT_CLAUDE
    found = shutil.which("claude")
    return Path(found) if found else None


def claude_version(command: Path | None = None) -> str | None:
    """E.g. ``"2.1.197"``, or None when the CLI is missing."""
    command = command or claude_path()
    if command is None:
        return None
    out = subprocess.run(
        [str(command), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    return out.stdout.split()[0] if out.returncode == 0 and out.stdout.strip() else None


def claude_env(
    user: str | pwd.struct_passwd,
    base_url: str | None = None,
    *,
    api_key: str = FAKE_API_KEY,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The clean environment a job's CLI gets: the user's own variables plus the API's.

    ``base_url`` is the fake's ``url`` (``ANTHROPIC_BASE_URL``); ``extra`` adds or
    overrides (e.g. ``CLAUDE_CODE_MAX_RETRIES``).
    """
    entry = pwd.getpwnam(user) if isinstance(user, str) else user
    env = {
        "HOME": entry.pw_dir,
        "USER": entry.pw_name,
        "LOGNAME": entry.pw_name,
        "SHELL": entry.pw_shell or "/bin/sh",
        "PATH": USER_PATH,
        "ANTHROPIC_API_KEY": api_key,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    if base_url is not None:
        env["ANTHROPIC_BASE_URL"] = base_url
    env.update(extra or {})
    return env


def claude_args(
    *,
    model: str | None = None,
    max_turns: int | None = None,
    allowed_tools: Sequence[str] = (),
    disallowed_tools: Sequence[str] = (),
    append_system_prompt: str | None = None,
    resume: str | None = None,
    input_format: str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The headless command-line options, without the executable (see the notes)."""
    args = ["-p", "--output-format", "stream-json", "--verbose", "--dangerously-skip-permissions"]
    if input_format:
        args += ["--input-format", input_format]
    if model:
        args += ["--model", model]
    if max_turns is not None:
        args += ["--max-turns", str(max_turns)]
    # one value per option, joined: a variadic option would swallow what follows
    if allowed_tools:
        args += ["--allowedTools", ",".join(allowed_tools)]
    if disallowed_tools:
        args += ["--disallowedTools", ",".join(disallowed_tools)]
    if append_system_prompt:
        args += ["--append-system-prompt", append_system_prompt]
    if resume:
        args += ["--resume", resume]
    return args + list(extra)


def user_message(text: str, images: Iterable[tuple[str, bytes]] = ()) -> str:
    """One ``--input-format stream-json`` line: a user message with image blocks, then text.

    ``images`` holds ``(media_type, data)`` pairs, e.g. ``("image/png", png_bytes)``.
    """
    content: list[dict[str, Any]] = [
        {
            "type": "image",
            "source": {
                "type": "base64",
                "media_type": media_type,
                "data": base64.b64encode(data).decode(),
            },
        }
        for media_type, data in images
    ]
    content.append({"type": "text", "text": text})
    message = {"type": "user", "message": {"role": "user", "content": content}}
    return json.dumps(message) + "\n"


@dataclass
class ClaudeRun:
    """What one CLI run printed: the stream-json events, stderr and the exit code."""

    returncode: int
    events: list[dict[str, Any]]
    stdout: str
    stderr: str
    seconds: float
    bad_lines: list[str] = field(default_factory=list)

    @property
    def result(self) -> dict[str, Any]:
        """The final ``{"type": "result", ...}`` event (KeyError if there is none)."""
        for event in reversed(self.events):
            if event.get("type") == "result":
                return event
        raise KeyError(f"no result event; exit {self.returncode}; stderr: {self.stderr[-2000:]}")

    @property
    def init(self) -> dict[str, Any]:
        for event in self.events:
            if event.get("type") == "system" and event.get("subtype") == "init":
                return event
        raise KeyError("no system/init event")

    @property
    def session_id(self) -> str:
        return str(self.result["session_id"])

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == kind]


def parse_stream(stdout: str) -> tuple[list[dict[str, Any]], list[str]]:
    events: list[dict[str, Any]] = []
    bad: list[str] = []
    for line in stdout.splitlines():
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            bad.append(line)
            continue
        if isinstance(event, dict):
            events.append(event)
        else:
            bad.append(line)
    return events, bad


def run_claude(
    user: str | pwd.struct_passwd,
    cwd: Path,
    *,
    prompt: str | None = None,
    stdin: str | None = None,
    env: Mapping[str, str],
    args: Sequence[str] | None = None,
    command: Path | None = None,
    timeout: float = 120,
) -> ClaudeRun:
    """Run the CLI as ``user`` in ``cwd`` (which the user must own) and collect its output.

    The prompt goes on stdin (``prompt``), or ``stdin`` is sent as is (stream-json input).
    Needs root (it switches user the way the server does).
    """
    entry = pwd.getpwnam(user) if isinstance(user, str) else user
    command = command or claude_path()
    if command is None:
        raise FileNotFoundError("the Claude Code CLI is not installed (npm install)")
    argv = [str(command), *(args if args is not None else claude_args())]
    started = time.monotonic()
    proc = subprocess.run(
        argv,
        input=stdin if stdin is not None else (prompt or ""),
        capture_output=True,
        text=True,
        cwd=cwd,
        env=dict(env),
        user=entry.pw_uid,
        group=entry.pw_gid,
        extra_groups=os.getgrouplist(entry.pw_name, entry.pw_gid),
        timeout=timeout,
        check=False,
    )
    events, bad = parse_stream(proc.stdout)
    return ClaudeRun(
        proc.returncode, events, proc.stdout, proc.stderr, time.monotonic() - started, bad
    )
