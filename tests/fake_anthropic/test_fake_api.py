"""The fake Anthropic API: its wire format over HTTP, then with the real Claude Code CLI."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.claude_cli import claude_args, claude_path, run_claude, user_message

from . import (
    DEFAULT_TEXT,
    FakeAnthropic,
    Hang,
    Reply,
    Text,
    ToolUse,
    Usage,
    marker,
    overloaded,
    text,
    write_file,
)
from .fixtures import CliWorkspace
from .images import tiny_png

TOOLS = [{"name": "Bash", "input_schema": {"type": "object"}}]
SYSTEM = " - Primary working directory: /srv/work\n"


def ask(
    client: httpx.Client,
    prompt: str,
    *,
    history: list[dict[str, Any]] | None = None,
    stream: bool = True,
    session: str = "s-1",
    **extra: Any,
) -> httpx.Response:
    body = {
        "model": "claude-test-1",
        "max_tokens": 1000,
        "stream": stream,
        "system": [{"type": "text", "text": SYSTEM}],
        "tools": TOOLS,
        "messages": [{"role": "user", "content": prompt}, *(history or [])],
        **extra,
    }
    return client.post(
        "/v1/messages?beta=true", json=body, headers={"x-claude-code-session-id": session}
    )


def sse_events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for chunk in response.text.split("\n\n"):
        if not chunk.strip():
            continue
        lines = dict(line.split(": ", 1) for line in chunk.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def assemble(events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Content blocks rebuilt from the deltas, the way an SDK does it."""
    blocks: dict[int, dict[str, Any]] = {}
    partial: dict[int, str] = {}
    for name, data in events:
        if name == "content_block_start":
            blocks[data["index"]] = dict(data["content_block"])
        elif name == "content_block_delta":
            delta, block = data["delta"], blocks[data["index"]]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
            else:
                partial[data["index"]] = partial.get(data["index"], "") + delta["partial_json"]
        elif name == "content_block_stop" and data["index"] in partial:
            blocks[data["index"]]["input"] = json.loads(partial[data["index"]])
    return [blocks[i] for i in sorted(blocks)]


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def client(fake: FakeAnthropic) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.url, timeout=10) as http:
        yield http


# ----------------------------------------------------------------- wire format


def test_text_reply_streams_like_the_messages_api(client: httpx.Client) -> None:
    response = ask(client, "hi")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response)
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert start["model"] == "claude-test-1" and start["role"] == "assistant"
    assert start["usage"]["input_tokens"] == 100
    assert assemble(events) == [{"type": "text", "text": DEFAULT_TEXT}]
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] == 20


def test_tool_use_streams_input_json(client: httpx.Client) -> None:
    events = sse_events(ask(client, "go [script:whoami]"))
    (block,) = assemble(events)
    assert block["type"] == "tool_use" and block["name"] == "Bash"
    assert block["id"].startswith("toolu_")
    assert block["input"]["command"] == "id -un > who.txt"
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_non_streaming_answer_is_one_json_message(client: httpx.Client) -> None:
    response = ask(client, "go [script:write-file]", stream=False)
    message = response.json()
    assert message["type"] == "message" and message["stop_reason"] == "tool_use"
    (block,) = message["content"]
    assert block["input"] == {"file_path": "/srv/work/hello.txt", "content": "hello world\n"}
    assert message["usage"]["output_tokens"] == 20


def test_script_position_follows_the_conversation(client: httpx.Client) -> None:
    first = assemble(sse_events(ask(client, "go [script:multi-tool]")))
    assert first[0]["name"] == "Write"
    history = [
        {"role": "assistant", "content": first},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": first[0]["id"], "content": "ok"}],
        },
    ]
    second = assemble(sse_events(ask(client, "go [script:multi-tool]", history=history)))
    assert second[0]["name"] == "Bash"


def test_thinking_blocks_carry_a_signature(client: httpx.Client) -> None:
    blocks = assemble(sse_events(ask(client, "[script:thinking]")))
    assert blocks[0]["type"] == "thinking" and blocks[0]["signature"]
    assert blocks[1] == {"type": "text", "text": "Thought about it."}


def test_registered_script_and_placeholders(fake: FakeAnthropic, client: httpx.Client) -> None:
    tag = fake.add_script(
        "custom",
        [
            Reply(
                (Text("see {arg}"), ToolUse("Read", {"file_path": "{cwd}/{arg}"})),
                usage=Usage(input_tokens=7, output_tokens=3),
            ),
        ],
    )
    assert tag == "[script:custom]" and marker("custom", "a.png") == "[script:custom:a.png]"
    events = sse_events(ask(client, "look [script:custom:a.png]"))
    assert assemble(events) == [
        {"type": "text", "text": "see a.png"},
        {
            "type": "tool_use",
            "id": assemble(events)[1]["id"],
            "name": "Read",
            "input": {"file_path": "/srv/work/a.png"},
        },
    ]
    assert events[-2][1]["usage"]["input_tokens"] == 7


def test_api_errors(client: httpx.Client) -> None:
    response = ask(client, "[script:overloaded]")
    assert response.status_code == 529
    assert response.json() == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    assert ask(client, "[script:error-500]").json()["error"]["type"] == "api_error"
    assert ask(client, "[script:bad-request]").status_code == 400
    assert ask(client, "[script:no-such-script]").status_code == 400
    mid = ask(client, "[script:error-mid-stream]")
    assert mid.status_code == 200
    assert [name for name, _ in sse_events(mid)] == ["message_start", "error"]


def test_transient_error_counts_attempts_per_session(
    fake: FakeAnthropic, client: httpx.Client
) -> None:
    fake.add_script("flaky", [overloaded(times=2), text("finally")])
    assert ask(client, "[script:flaky]", session="a").status_code == 529
    assert ask(client, "[script:flaky]", session="b").status_code == 529
    assert ask(client, "[script:flaky]", session="a").status_code == 529
    assert assemble(sse_events(ask(client, "[script:flaky]", session="a")))[0]["text"] == "finally"
    assert ask(client, "[script:flaky]", session="b").status_code == 529


def test_past_the_script_end(fake: FakeAnthropic, client: httpx.Client) -> None:
    history = [{"role": "assistant", "content": "Hello"}, {"role": "user", "content": "more"}]
    (block,) = assemble(sse_events(ask(client, "[script:write-file]", history=history * 2)))
    assert "has no turn 2" in block["text"]
    assert fake.conversation("write-file")[-1].answer == "exhausted"
    fake.add_script("forever", [text("again")], repeat_last=True)
    (block,) = assemble(sse_events(ask(client, "[script:forever]", history=history * 3)))
    assert block["text"] == "again"


def test_side_requests_get_a_harmless_answer(fake: FakeAnthropic, client: httpx.Client) -> None:
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 50,
        "stream": True,
        "system": "Write a title for this conversation.",
        "messages": [{"role": "user", "content": "[script:overloaded] fix it"}],
    }
    response = client.post("/v1/messages", json=body)
    assert response.status_code == 200
    assert assemble(sse_events(response)) == [{"type": "text", "text": "OK"}]
    (rec,) = fake.conversation(include_side=True)
    assert rec.side and rec.script is None and fake.conversation() == []


def test_records_keep_every_request(fake: FakeAnthropic, client: httpx.Client) -> None:
    assert client.head("/").status_code == 200
    assert client.post("/v1/messages/count_tokens", json={"messages": []}).json()["input_tokens"]
    assert client.get("/v1/models").json()["data"]
    assert client.get("/api/oauth/whatever").status_code == 404
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "QUJD"},
    }
    history = [
        {"role": "assistant", "content": "ok"},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t", "content": [image]}],
        },
    ]
    ask(client, "see [script:echo]", history=history, session="sess-9")
    kinds = [r.kind for r in fake.requests]
    assert kinds == ["probe", "count_tokens", "models", "other", "messages"]
    rec = fake.conversation("echo", session_id="sess-9")[0]
    assert rec.query == "beta=true" and rec.model == "claude-test-1"
    assert rec.images() == [image] and rec.position == 1
    assert rec.texts() == ["see [script:echo]"] and SYSTEM in rec.system
    assert rec.completed and not rec.disconnected
    fake.clear()
    assert fake.requests == []


def test_control_api_for_another_process(fake: FakeAnthropic, client: httpx.Client) -> None:
    turns = [
        {"tool": {"name": "Bash", "input": {"command": "true"}}},
        {"text": "done", "usage": {"input_tokens": 1, "output_tokens": 2}},
    ]
    assert client.put("/_fake/scripts/remote", json={"turns": turns}).status_code == 200
    assert client.put("/_fake/scripts/bad", json={"turns": [{"nope": 1}]}).status_code == 400
    (block,) = assemble(sse_events(ask(client, "[script:remote]")))
    assert block["input"] == {"command": "true"}
    records = client.get("/_fake/requests").json()
    assert [r["script"] for r in records] == ["remote"]
    assert client.delete("/_fake/requests").status_code == 200
    assert fake.requests == []


def test_hang_notices_the_client_leaving(fake: FakeAnthropic) -> None:
    fake.add_script("stuck", [Hang()])
    with (
        httpx.Client(base_url=fake.url, timeout=10) as http,
        http.stream(
            "POST",
            "/v1/messages",
            json={
                "model": "m",
                "max_tokens": 5,
                "stream": True,
                "tools": TOOLS,
                "messages": [{"role": "user", "content": "[script:stuck]"}],
            },
        ) as response,
    ):
        first = next(response.iter_lines())
        assert first == "event: message_start"
    rec = fake.wait_for(lambda r: r.disconnected, timeout=10)
    assert rec.script == "stuck" and not rec.completed


# ----------------------------------------------------------------- with the real CLI


def cli(ws: CliWorkspace, prompt: str, **kwargs: Any) -> Any:
    return run_claude(ws.user, ws.cwd, prompt=prompt, env=ws.env, **kwargs)


@pytest.mark.slow
def test_cli_text_answer(cli_workspace: CliWorkspace, fake_anthropic: FakeAnthropic) -> None:
    run = cli(cli_workspace, "say hello [script:hello]")
    assert run.returncode == 0, run.stderr
    init, result = run.init, run.result
    assert init["cwd"] == str(cli_workspace.cwd) and init["permissionMode"] == "bypassPermissions"
    assert result["subtype"] == "success" and result["is_error"] is False
    assert result["result"] == DEFAULT_TEXT and result["num_turns"] == 1
    assert result["session_id"] == init["session_id"]
    assert result["usage"]["input_tokens"] == 100 and result["usage"]["output_tokens"] == 20
    assert result["total_cost_usd"] > 0
    (rec,) = fake_anthropic.conversation(session_id=run.session_id)
    assert rec.query == "beta=true" and rec.stream and "Bash" in rec.tool_names
    assert f"Primary working directory: {cli_workspace.cwd}" in rec.system


@pytest.mark.slow
def test_cli_write_tool_makes_a_file_of_the_user(
    cli_workspace: CliWorkspace, fake_anthropic: FakeAnthropic
) -> None:
    run = cli(cli_workspace, "[script:write-file]")
    assert run.returncode == 0, run.stderr
    written = cli_workspace.cwd / "hello.txt"
    assert written.read_text() == "hello world\n"
    assert written.stat().st_uid == cli_workspace.user.pw_uid
    assert run.result["num_turns"] == 2 and run.result["usage"]["output_tokens"] == 40
    first, second = fake_anthropic.conversation(session_id=run.session_id)
    (tool_use,) = [b for b in second.blocks("tool_use")]
    (tool_result,) = second.blocks("tool_result")
    assert tool_result["tool_use_id"] == tool_use["id"] and first.position == 0


@pytest.mark.slow
def test_cli_bash_runs_as_the_user(cli_workspace: CliWorkspace) -> None:
    run = cli(cli_workspace, "[script:whoami]")
    assert run.returncode == 0, run.stderr
    assert (cli_workspace.cwd / "who.txt").read_text().strip() == cli_workspace.user.pw_name


@pytest.mark.slow
def test_cli_api_error_is_a_failed_result(cli_workspace: CliWorkspace) -> None:
    run = cli(cli_workspace, "[script:overloaded]")
    assert run.returncode == 1
    assert run.result["is_error"] is True and run.result["api_error_status"] == 529
    assert run.result["result"].startswith("API Error: 529")


@pytest.mark.slow
def test_cli_retries_a_transient_error(
    cli_workspace: CliWorkspace, fake_anthropic: FakeAnthropic
) -> None:
    env = {**cli_workspace.env, "CLAUDE_CODE_MAX_RETRIES": "2"}
    run = run_claude(
        cli_workspace.user, cli_workspace.cwd, prompt="[script:overloaded-once]", env=env
    )
    assert run.returncode == 0 and run.result["result"] == "Recovered after overload."
    retries = [e for e in run.events if e.get("subtype") == "api_retry"]
    assert retries and retries[0]["error_status"] == 529
    answers = [r.answer for r in fake_anthropic.conversation(session_id=run.session_id)]
    assert answers == ["error 529", "reply"]


@pytest.mark.slow
def test_cli_resume_sends_the_earlier_conversation(
    cli_workspace: CliWorkspace, fake_anthropic: FakeAnthropic
) -> None:
    first = cli(cli_workspace, "first question [script:two-answers]")
    assert first.result["result"] == "First answer."
    second = cli(cli_workspace, "second question", args=claude_args(resume=first.session_id))
    assert second.returncode == 0 and second.result["result"] == "Second answer."
    assert second.session_id == first.session_id
    last = fake_anthropic.conversation(session_id=first.session_id)[-1]
    texts = last.texts(role=None)
    assert "first question [script:two-answers]" in texts
    assert "First answer." in texts and texts[-1].strip() == "second question"


@pytest.mark.slow
def test_cli_stream_json_input_carries_an_image(
    cli_workspace: CliWorkspace, fake_anthropic: FakeAnthropic
) -> None:
    png = tiny_png()
    stdin = user_message("what is this? [script:hello]", [("image/png", png)])
    run = run_claude(
        cli_workspace.user,
        cli_workspace.cwd,
        stdin=stdin,
        env=cli_workspace.env,
        args=claude_args(input_format="stream-json"),
    )
    assert run.returncode == 0, run.stderr
    (rec,) = fake_anthropic.conversation(session_id=run.session_id)
    (image,) = rec.images()
    assert image["source"]["media_type"] == "image/png"
    assert base64.b64decode(image["source"]["data"]) == png


@pytest.mark.slow
def test_cli_read_tool_sends_a_png_as_an_image(
    cli_workspace: CliWorkspace, fake_anthropic: FakeAnthropic
) -> None:
    png = tiny_png(3, 3, (0, 0, 255))
    picture = cli_workspace.cwd / "pic.png"
    picture.write_bytes(png)
    cli_workspace.own(picture)
    run = cli(cli_workspace, "look [script:read:pic.png]")
    assert run.returncode == 0, run.stderr
    last = fake_anthropic.conversation(session_id=run.session_id)[-1]
    (image,) = last.images()
    assert base64.b64decode(image["source"]["data"]) == png


@pytest.mark.slow
def test_cli_options_reach_the_model(
    cli_workspace: CliWorkspace, fake_anthropic: FakeAnthropic
) -> None:
    args = claude_args(
        model="claude-sonnet-4-5-20250929",
        max_turns=3,
        disallowed_tools=["WebFetch", "WebSearch"],
        append_system_prompt="Always answer in French.",
    )
    run = cli(cli_workspace, "[script:echo] bonjour", args=args)
    assert run.result["result"] == "You said: [script:echo] bonjour"
    (rec,) = fake_anthropic.conversation(session_id=run.session_id)
    assert rec.model == "claude-sonnet-4-5-20250929"
    assert rec.system.rstrip().endswith("Always answer in French.")
    assert "WebFetch" not in rec.tool_names and "Read" in rec.tool_names


@pytest.mark.slow
def test_cli_max_turns(cli_workspace: CliWorkspace) -> None:
    run = cli(cli_workspace, "[script:multi-tool]", args=claude_args(max_turns=1))
    assert run.returncode == 1
    assert run.result["subtype"] == "error_max_turns" and run.result["is_error"] is True


@pytest.mark.slow
def test_cli_concurrent_runs_of_one_user(
    cli_workspace: CliWorkspace, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.add_script("concurrent", [write_file("out.txt", "{arg}\n"), text("ok")])
    dirs = []
    for index in range(4):
        directory = cli_workspace.cwd / f"job{index}"
        directory.mkdir()
        dirs.append(cli_workspace.own(directory))

    def job(index: int) -> Any:
        return run_claude(
            cli_workspace.user,
            dirs[index],
            env=cli_workspace.env,
            prompt=f"[script:concurrent:{index}]",
            timeout=240,
        )

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(job, range(4)))
    assert [r.returncode for r in runs] == [0, 0, 0, 0]
    assert len({r.session_id for r in runs}) == 4
    for index, directory in enumerate(dirs):
        assert (directory / "out.txt").read_text() == f"{index}\n"
    json.loads((cli_workspace.home / ".claude.json").read_text())


@pytest.mark.slow
def test_cli_interrupt_during_a_long_think(
    cli_workspace: CliWorkspace, fake_anthropic: FakeAnthropic
) -> None:
    command = claude_path()
    assert command is not None
    fake_anthropic.add_script("interrupt-me", [Hang()])
    user = cli_workspace.user
    with subprocess.Popen(
        [str(command), *claude_args()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=cli_workspace.cwd,
        env=cli_workspace.env,
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        process_group=0,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("[script:interrupt-me]")
        proc.stdin.close()
        rec = fake_anthropic.wait_for(lambda r: r.script == "interrupt-me", timeout=60)
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        out = proc.stdout.read()
        assert proc.wait(timeout=30) == 0  # sic: an interrupted stream still exits 0
    result = json.loads(out.splitlines()[-1])
    assert result["type"] == "result" and result["subtype"] == "error_during_execution"
    assert result["is_error"] is True
    fake_anthropic.wait_for(lambda r: r.seq == rec.seq and r.disconnected, timeout=10)


def test_project_cli_location() -> None:
    found = claude_path()
    if found is None:
        pytest.skip("the Claude Code CLI is not installed")
    assert found.name == "claude"
    assert Path(found).exists()
