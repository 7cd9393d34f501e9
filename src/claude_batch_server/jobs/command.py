"""The Claude Code command line, environment and standard input of one run.

Every local user reads every command line (`ps`, /proc/PID/cmdline), so nothing a user
wrote goes into one: the prompt goes on standard input, and the options a user writes
(model, allowed and disallowed tools, the appended system prompt) go into files that only
the job's user can read (`Command.files`: the job's own process writes them into a
private folder and adds `--flag=path`). What stays in argv is the server's: constant
flags, the number of turns, the session id Claude Code chose (checked to be one).
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from claude_batch_server.accounts import Account

BASE_ARGS = [
    "-p",
    "--output-format",
    "stream-json",
    "--verbose",
    "--dangerously-skip-permissions",
]
PASSED_PREFIXES = ("ANTHROPIC_", "CLAUDE_CODE_")
SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
USER_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class Image:
    name: str
    media_type: str
    data: bytes


@dataclass(frozen=True)
class Command:
    argv: list[str]
    files: dict[str, str]  # flag -> the content of the file whose path the flag is given


def arguments(
    command: str, options: Mapping[str, Any], session_id: str | None, images: bool
) -> Command:
    argv = [command, *BASE_ARGS]
    if options.get("maxTurns"):
        argv.append(f"--max-turns={int(options['maxTurns'])}")
    if session_id:
        if not SESSION_ID.fullmatch(session_id):
            raise ValueError(f"not a Claude Code session id: {session_id[:80]!r}")
        argv.append(f"--resume={session_id}")
    if images:
        argv.append("--input-format=stream-json")
    files = {}
    settings = _settings(options)
    if settings:
        files["--settings"] = json.dumps(settings)
    if options.get("appendSystemPrompt"):
        files["--append-system-prompt-file"] = options["appendSystemPrompt"]
    return Command(argv, files)


def _settings(options: Mapping[str, Any]) -> dict[str, Any]:
    """Claude Code settings for the options a user chose: the model, and the tools as
    permission rules (what --allowedTools and --disallowedTools add)."""
    settings: dict[str, Any] = {}
    if options.get("model"):
        settings["model"] = options["model"]
    rules = {"allow": options.get("allowedTools"), "deny": options.get("disallowedTools")}
    permissions = {kind: list(tools) for kind, tools in rules.items() if tools}
    if permissions:
        settings["permissions"] = permissions
    return settings


def environment(account: Account, server_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The user's own basics plus the server's ANTHROPIC_* and CLAUDE_CODE_*, nothing else."""
    source = os.environ if server_env is None else server_env
    env = {k: v for k, v in source.items() if k.startswith(PASSED_PREFIXES)}
    env.update(
        HOME=str(account.home),
        USER=account.name,
        LOGNAME=account.name,
        SHELL=account.shell or "/bin/sh",
        PATH=USER_PATH,
    )
    return env


def stdin(prompt: str, images: list[Image], image_dir: str | None) -> bytes:
    """Plain text; or, with images, one stream-json user message holding them as blocks."""
    if not images:
        return prompt.encode()
    note = f"\n\n(The attached images are also in {image_dir}/.)" if image_dir else ""
    content: list[dict[str, Any]] = [{"type": "text", "text": prompt + note}]
    for image in images:
        content.append(
            {
                "type": "image",
                "source": {
                    "type": "base64",
                    "media_type": image.media_type,
                    "data": base64.b64encode(image.data).decode(),
                },
            }
        )
    message = {"type": "user", "message": {"role": "user", "content": content}}
    return (json.dumps(message) + "\n").encode()
