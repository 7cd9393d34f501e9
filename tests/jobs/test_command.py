"""The command line, environment and standard input of a run, built directly: what a user
wrote never reaches argv (every local user reads every command line), and what reaches
the files and stdin is exactly what they asked for."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from claude_batch_server.accounts import Account
from claude_batch_server.jobs.command import Image, arguments, environment, stdin

ALICE = Account("alice", 1500, 1500, Path("/home/alice"), "/bin/bash", (1500,), ("alice",))
SECRET = "hunter2-do-not-show"  # stands for anything a user wrote
OPTIONS = {
    "model": f"claude-{SECRET}-model",
    "allowedTools": [f"Bash(echo {SECRET}:*)", "Read"],
    "disallowedTools": [f"WebFetch(domain:{SECRET}.example)"],
    "appendSystemPrompt": f"Always say {SECRET}.\nTwice.",
    "maxTurns": 7,
}


def test_nothing_a_user_wrote_goes_into_argv() -> None:
    command = arguments("/usr/local/bin/claude", OPTIONS, "sess-1", images=True)

    assert not any(SECRET in part for part in command.argv)
    assert command.argv[:6] == [
        "/usr/local/bin/claude",
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--dangerously-skip-permissions",
    ]
    assert set(command.argv[6:]) == {
        "--max-turns=7",
        "--resume=sess-1",
        "--input-format=stream-json",
    }


def test_the_options_a_user_wrote_go_into_files_as_written() -> None:
    command = arguments("claude", OPTIONS, None, images=False)

    assert set(command.files) == {"--settings", "--append-system-prompt-file"}
    assert json.loads(command.files["--settings"]) == {
        "model": OPTIONS["model"],
        "permissions": {
            "allow": OPTIONS["allowedTools"],
            "deny": OPTIONS["disallowedTools"],
        },
    }
    assert command.files["--append-system-prompt-file"] == OPTIONS["appendSystemPrompt"]


def test_a_plain_run_has_no_files_and_no_optional_flags() -> None:
    command = arguments("claude", {}, None, images=False)
    assert command.files == {}
    assert not any(
        flag.startswith(("--max-turns", "--resume", "--input-format")) for flag in command.argv
    )
    # empty lists and a zero are no choice either
    empty = {"allowedTools": [], "disallowedTools": [], "maxTurns": 0, "model": None}
    assert arguments("claude", empty, None, images=False) == command
    assert arguments("claude", {}, "", images=False) == command  # no session to resume


def test_only_the_tools_chosen_become_permission_rules() -> None:
    command = arguments("claude", {"disallowedTools": ["Bash"]}, None, images=False)
    assert json.loads(command.files["--settings"]) == {"permissions": {"deny": ["Bash"]}}


@pytest.mark.parametrize(
    "session_id",
    [
        "--dangerously-load-plugin=/tmp/x",  # would be read as an option
        "-p",
        "abc def",
        "abc\n--verbose",
        "../../etc/passwd",
        "x" * 129,
    ],
)
def test_a_session_id_that_is_not_one_never_reaches_argv(session_id: str) -> None:
    with pytest.raises(ValueError, match="not a Claude Code session id"):
        arguments("claude", {}, session_id, images=False)


def test_a_real_session_id_is_resumed() -> None:
    session = "0f5e2a9c-3b1d-4c7e-9a8b-123456789abc"
    command = arguments("claude", {}, session, images=False)
    assert f"--resume={session}" in command.argv


def test_the_environment_holds_the_users_basics_and_the_servers_agent_settings() -> None:
    server_env = {
        "ANTHROPIC_API_KEY": "sk-test",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
        "CLAUDE_CODE_USE_BEDROCK": "0",
        "JWT_SECRET": "the server's own",
        "DATABASE_URL": "postgresql://server:secret@localhost/db",
        "LD_PRELOAD": "/tmp/evil.so",
        "PYTHONPATH": "/srv",
        "HOME": "/root",
        "PATH": "/root/bin:/usr/bin",
        "USER": "root",
    }

    env = environment(ALICE, server_env)

    assert env == {
        "ANTHROPIC_API_KEY": "sk-test",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
        "CLAUDE_CODE_USE_BEDROCK": "0",
        "HOME": "/home/alice",
        "USER": "alice",
        "LOGNAME": "alice",
        "SHELL": "/bin/bash",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
    }


def test_an_account_without_a_shell_gets_sh() -> None:
    nobody_shell = Account("bob", 1501, 1501, Path("/home/bob"), "", (1501,), ("bob",))
    assert environment(nobody_shell, {})["SHELL"] == "/bin/sh"


def test_the_prompt_goes_on_stdin_as_written() -> None:
    prompt = "Fix the bug.\n\n--resume=x $(rm -rf ~) «ünïcødé»\n"
    assert stdin(prompt, [], None) == prompt.encode()


def test_images_go_on_stdin_as_one_stream_json_message() -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    images = [Image("a.png", "image/png", png), Image("b.jpg", "image/jpeg", b"\xff\xd8\xff")]

    data = stdin("Look:\nhere", images, "/home/alice/.claude-batch/images")

    assert data.endswith(b"\n") and data.count(b"\n") == 1  # one line of stream-json
    message = json.loads(data)
    assert message["type"] == "user"
    assert message["message"]["role"] == "user"
    text, *blocks = message["message"]["content"]
    assert text["type"] == "text"
    assert text["text"].startswith("Look:\nhere")
    assert "/home/alice/.claude-batch/images/" in text["text"]
    assert [(b["type"], b["source"]["media_type"]) for b in blocks] == [
        ("image", "image/png"),
        ("image", "image/jpeg"),
    ]
    assert [base64.b64decode(b["source"]["data"]) for b in blocks] == [png, b"\xff\xd8\xff"]


def test_images_without_a_folder_add_no_note() -> None:
    message = json.loads(stdin("Look", [Image("a.png", "image/png", b"x")], None))
    assert message["message"]["content"][0]["text"] == "Look"
