"""The Claude Code command line, environment and standard input of one run.

Option values go in `--flag=value` form, so none can be taken for a flag of its own, and
the prompt goes on standard input, never through a shell.
"""

from __future__ import annotations

import base64
import json
import os
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
USER_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class Image:
    name: str
    media_type: str
    data: bytes


def arguments(
    command: str, options: Mapping[str, Any], session_id: str | None, images: bool
) -> list[str]:
    argv = [command, *BASE_ARGS]
    if options.get("model"):
        argv.append(f"--model={options['model']}")
    if options.get("maxTurns"):
        argv.append(f"--max-turns={int(options['maxTurns'])}")
    if options.get("allowedTools"):
        argv.append(f"--allowedTools={','.join(options['allowedTools'])}")
    if options.get("disallowedTools"):
        argv.append(f"--disallowedTools={','.join(options['disallowedTools'])}")
    if options.get("appendSystemPrompt"):
        argv.append(f"--append-system-prompt={options['appendSystemPrompt']}")
    if session_id:
        argv.append(f"--resume={session_id}")
    if images:
        argv.append("--input-format=stream-json")
    return argv


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
