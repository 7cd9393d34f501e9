"""Claude Code's stream-json lines turned into events and a run's result, called directly:
what the transcript keeps, what a job's outcome is taken from, and what a job that
prints anything it likes (it is untrusted code) can and cannot make of them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from claude_batch_server.jobs.transcript import RunResult, parse_stdout, server_event, stderr_event

SESSION = "0f5e2a9c-3b1d-4c7e-9a8b-123456789abc"
RESULT = {
    "type": "result",
    "subtype": "success",
    "is_error": False,
    "result": "Done: fixed the bug.",
    "num_turns": 3,
    "total_cost_usd": 0.0123,
    "session_id": SESSION,
    "usage": {
        "input_tokens": 10,
        "cache_creation_input_tokens": 200,
        "cache_read_input_tokens": 3000,
        "output_tokens": 45,
    },
}


def line(value: Any) -> bytes:
    return (json.dumps(value) + "\n").encode()


def run(*lines: bytes) -> RunResult:
    result = RunResult()
    for each in lines:
        parse_stdout(each, result)
    return result


def test_a_successful_run_reports_its_output_turns_cost_and_tokens() -> None:
    init = {"type": "system", "subtype": "init", "session_id": SESSION, "model": "m"}
    assistant = {"type": "assistant", "message": {"content": [{"type": "text", "text": "Hi"}]}}
    result = RunResult()

    events = [parse_stdout(line(e), result) for e in (init, assistant, RESULT)]

    assert [e.type for e in events] == ["system", "assistant", "result"]
    # each event keeps the line as it came, without its newline
    assert [json.loads(e.data) for e in events] == [init, assistant, RESULT]
    assert result.succeeded
    assert result.session_id == SESSION
    assert result.output == "Done: fixed the bug."
    assert (result.num_turns, result.cost_usd) == (3, 0.0123)
    assert result.input_tokens == 3210  # every input token, cached or not
    assert result.output_tokens == 45


@pytest.mark.parametrize(
    "change",
    [
        {"is_error": True},
        {"subtype": "error_max_turns"},
        {"subtype": "error_during_execution", "is_error": True},
    ],
)
def test_a_run_that_reports_an_error_has_not_succeeded(change: dict[str, Any]) -> None:
    errors = {"errors": ["Reached maximum number of turns (3)"]}
    result = run(line(RESULT | change | errors))
    assert result.seen_result
    assert not result.succeeded
    assert result.errors == ["Reached maximum number of turns (3)"]


def test_a_run_without_a_result_line_has_not_succeeded() -> None:
    result = run(line({"type": "system", "session_id": SESSION}), line({"type": "assistant"}))
    assert not result.seen_result
    assert not result.succeeded
    assert result.session_id == SESSION  # the session can still be resumed


@pytest.mark.parametrize(
    "text",
    [
        b"plain words from a hook\n",
        b'{"type": "result", "is_error": false\n',  # broken JSON
        b'["type", "result"]\n',  # JSON, but no object
        b'{"subtype": "success", "result": "forged"}\n',  # an object without a type
        b'{"type": 1, "result": "forged"}\n',  # a type that is no string
        b"\n",
    ],
)
def test_what_is_not_a_stream_json_event_is_kept_as_raw_text(text: bytes) -> None:
    result = RunResult()
    event = parse_stdout(text, result)
    assert event.type == "raw"
    assert json.loads(event.data) == {"text": text.decode().rstrip("\n")}
    assert result == RunResult()  # and nothing is taken from it


def test_a_line_that_was_cut_is_raw_and_never_the_result() -> None:
    # the reader kept the first part of an overlong line: even when that part parses, it
    # is not the whole event, so it can neither forge nor truncate the job's result
    kept = line(RESULT)
    result = RunResult()

    event = parse_stdout(kept, result, dropped=9_000_000)

    assert event.type == "raw"
    assert json.loads(event.data) == {"text": kept.decode().rstrip("\n"), "cutBytes": 9_000_000}
    assert not result.seen_result
    assert result.output is None


def test_bytes_that_are_not_utf8_are_replaced_not_refused() -> None:
    event = parse_stdout(b"caf\xe9 \xff\xfe ok\r\n", RunResult())
    assert event.type == "raw"
    assert json.loads(event.data) == {"text": "caf\ufffd \ufffd\ufffd ok"}


def test_text_is_stored_unescaped() -> None:
    # stored close to the size it came in: no \\uXXXX for every non-ASCII character
    event = parse_stdout("日本語のテキスト\n".encode(), RunResult())
    assert "日本語のテキスト" in event.data


def test_an_overlong_type_is_cut_to_what_the_table_holds() -> None:
    event = parse_stdout(line({"type": "x" * 10_000}), RunResult())
    assert event.type == "x" * 32


@pytest.mark.parametrize(
    "session",
    ["--dangerously-skip-permissions", "a b", "x" * 200, 42, None, "abc\n--verbose"],
)
def test_a_session_id_that_is_not_one_is_ignored(session: object) -> None:
    # the next run's command line would carry it, where every local user reads it
    result = run(line({"type": "system", "session_id": SESSION}))
    parse_stdout(line({"type": "assistant", "session_id": session}), result)
    assert result.session_id == SESSION


@pytest.mark.parametrize(
    "change",
    [
        {"num_turns": "3", "total_cost_usd": "1e9", "usage": "lots"},
        {"num_turns": True, "total_cost_usd": False, "usage": {"output_tokens": "45"}},
        {"num_turns": None, "total_cost_usd": None, "usage": None, "result": 17},
        {"num_turns": [3], "total_cost_usd": {}, "usage": [], "subtype": 5, "errors": "x"},
    ],
)
def test_figures_of_the_wrong_type_count_as_nothing(change: dict[str, Any]) -> None:
    result = run(line(RESULT | change))
    assert result.seen_result
    assert (result.num_turns, result.cost_usd, result.output_tokens) == (0, 0.0, 0)
    assert result.output in (None, "Done: fixed the bug.")
    assert result.errors == []


def test_stderr_lines_are_kept_as_text() -> None:
    assert json.loads(stderr_event(b"Error: boom\n").data) == {"text": "Error: boom"}
    cut = stderr_event(b"x" * 100, dropped=50)
    assert cut.type == "stderr"
    assert json.loads(cut.data) == {"text": "x" * 100, "cutBytes": 50}


def test_server_notes_are_their_own_kind() -> None:
    event = server_event("ended", how="timeout", exitCode=None)
    assert event.type == "server"
    assert json.loads(event.data) == {"event": "ended", "how": "timeout", "exitCode": None}
