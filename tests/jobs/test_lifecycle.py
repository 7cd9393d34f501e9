"""A job's life through the API, run by the real Claude Code CLI as the user."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import httpx

from tests.fake_anthropic import FakeAnthropic, Hang, bash, marker, text
from tests.fake_anthropic.images import tiny_png
from tests.jobs.conftest import JobWorldFactory
from tests.support.api import git, stored_repository


def workspace(world_dir: Path, job_id: str) -> Path:
    return world_dir / "workspaces" / job_id


def test_a_job_writes_a_file_as_its_user(job_world: JobWorldFactory) -> None:
    world = job_world()
    alice = world.member()
    job = alice.run(alice.repo, f"Write hello.txt {marker('write-file')}")
    assert job["status"] == "created"

    done = alice.wait_ended(job["jobId"])

    assert done["status"] == "completed", done
    assert done["exitCode"] == 0 and done["error"] is None
    assert done["output"] == "I wrote hello.txt."
    assert done["numTurns"] == 2
    assert done["costUsd"] > 0
    assert done["usage"]["inputTokens"] > 0 and done["usage"]["outputTokens"] > 0
    assert done["sessionId"]
    assert done["startedAt"] <= done["completedAt"]
    written = workspace(world.server.data_dir, job["jobId"]) / "hello.txt"
    assert written.read_text() == "hello world\n"
    assert written.stat().st_uid == alice.user.uid
    stored = stored_repository(world.server, alice.user.name, alice.repo)
    assert (stored / "README.md").exists() and not (stored / "hello.txt").exists()

    events = alice.events(job["jobId"])
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    types = [e["type"] for e in events]
    assert types[0] == "server" and "system" in types and "assistant" in types
    assert types[-2:] == ["result", "server"]
    assert events[-1]["event"]["status"] == "completed"


def test_bash_runs_as_the_user(job_world: JobWorldFactory) -> None:
    world = job_world()
    alice = world.member()
    job = alice.run(alice.repo, f"Who am I? {marker('whoami')}")
    assert alice.wait_ended(job["jobId"])["status"] == "completed"
    who = workspace(world.server.data_dir, job["jobId"]) / "who.txt"
    assert who.read_text().strip() == alice.user.name
    assert who.stat().st_uid == alice.user.uid


def test_an_api_error_fails_the_job(job_world: JobWorldFactory) -> None:
    alice = job_world().member()
    job = alice.run(alice.repo, f"Fail please {marker('bad-request')}")
    done = alice.wait_ended(job["jobId"])
    assert done["status"] == "failed"
    assert "fake invalid request" in done["error"] or "400" in done["error"]


def test_resume_continues_the_same_session(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic
) -> None:
    world = job_world()
    alice = world.member()
    job = alice.run(alice.repo, f"First {marker('two-answers')}")
    first = alice.wait_ended(job["jobId"])
    assert first["output"] == "First answer."
    seen = len(alice.events(job["jobId"]))

    response = alice.http.post(f"/jobs/{job['jobId']}/resume", json={"prompt": "And then?"})
    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    second = alice.wait_ended(job["jobId"])

    assert second["status"] == "completed"
    assert second["output"] == "Second answer."
    assert second["sessionId"] == first["sessionId"]
    assert second["numTurns"] > first["numTurns"]
    last = fake_anthropic.conversation(session_id=first["sessionId"])[-1]
    assert "And then?" in last.texts()[-1]
    assert any("First answer." in text for text in last.texts(role="assistant"))
    events = alice.events(job["jobId"])
    assert len(events) > seen
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


def test_an_image_reaches_the_model(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic
) -> None:
    world = job_world()
    alice = world.member()
    png = tiny_png(3, 3, (0, 128, 255))
    job = alice.create_job(alice.repo, f"Describe the picture {marker('hello')}")
    upload = alice.http.post(
        f"/jobs/{job['jobId']}/images", files=[("file", ("../../etc/pic.png", png, "image/png"))]
    )
    assert upload.status_code == 201, upload.text
    assert upload.json() == [{"name": "pic.png", "size": len(png)}]
    alice.start(job["jobId"])
    done = alice.wait_ended(job["jobId"])
    assert done["status"] == "completed" and done["images"] == ["pic.png"]

    received = [
        image
        for request in fake_anthropic.conversation(session_id=done["sessionId"])
        for image in request.images()
    ]
    assert received and base64.b64decode(received[0]["source"]["data"]) == png
    ws = workspace(world.server.data_dir, job["jobId"])
    assert (ws / ".claude-batch" / "images" / "pic.png").read_bytes() == png
    assert "claude-batch" not in git(ws, "status", "--porcelain")


def test_options_reach_claude_code(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic
) -> None:
    alice = job_world().member()
    options = {
        "model": "claude-test-model-1",
        "maxTurns": 5,
        "disallowedTools": ["WebFetch", "Bash(rm:*)"],
        "appendSystemPrompt": "--always answer in haiku",
    }
    job = alice.run(alice.repo, f"Hi {marker('hello')}", options=options)
    done = alice.wait_ended(job["jobId"])
    assert done["status"] == "completed", done
    assert done["options"] == options
    request = fake_anthropic.conversation(session_id=done["sessionId"])[0]
    assert request.model == "claude-test-model-1"
    assert "--always answer in haiku" in request.system
    assert "WebFetch" not in request.tool_names and "Read" in request.tool_names


def test_state_rules_are_409(job_world: JobWorldFactory) -> None:
    alice = job_world().member()
    job = alice.create_job(alice.repo, f"Hi {marker('hello')}")
    job_id = job["jobId"]
    assert alice.http.post(f"/jobs/{job_id}/resume", json={"prompt": "x"}).status_code == 409
    alice.start(job_id)
    assert alice.http.post(f"/jobs/{job_id}/start").status_code == 409
    png = ("file", ("a.png", tiny_png(), "image/png"))
    assert alice.http.post(f"/jobs/{job_id}/images", files=[png]).status_code == 409
    alice.wait_ended(job_id)
    assert alice.http.post(f"/jobs/{job_id}/cancel").status_code == 409


def test_bad_job_input_is_4xx(job_world: JobWorldFactory) -> None:
    alice = job_world().member()
    bad_bodies = [
        {"repository": alice.repo},
        {"repository": alice.repo, "prompt": ""},
        {"repository": "nope", "prompt": "x"},
        {"repository": alice.repo, "prompt": "x", "options": {"model": "--evil"}},
        {"repository": alice.repo, "prompt": "x", "options": {"timeout": -1}},
        {"repository": alice.repo, "prompt": "x", "options": {"allowedTools": ["a,b"]}},
        {"repository": alice.repo, "prompt": "x", "options": {"unknown": 1}},
    ]
    for body in bad_bodies:
        response = alice.http.post("/jobs", json=body)
        assert 400 <= response.status_code < 500, (body, response.text)
        assert response.json()["detail"]
    job = alice.create_job(alice.repo, "x")
    not_image = ("file", ("x.png", b"#!/bin/sh\necho hi\n", "image/png"))
    response = alice.http.post(f"/jobs/{job['jobId']}/images", files=[not_image])
    assert response.status_code == 400
    huge = ("file", ("big.png", tiny_png() + b"\0" * (10 * 1024 * 1024), "image/png"))
    assert alice.http.post(f"/jobs/{job['jobId']}/images", files=[huge]).status_code in (400, 413)
    assert alice.job(job["jobId"])["images"] == []


def test_event_stream_resumes_from_last_event_id(job_world: JobWorldFactory) -> None:
    alice = job_world().member()
    job = alice.run(alice.repo, f"Write {marker('write-file')}")

    def read_stream(last_id: int | None) -> list[tuple[str, str, str]]:
        headers = {"Last-Event-ID": str(last_id)} if last_id is not None else {}
        seen, fields = [], {"id": "", "event": "message", "data": ""}
        with alice.http.stream(
            "GET", f"/jobs/{job['jobId']}/events", headers=headers, timeout=httpx.Timeout(120)
        ) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if not line:
                    if fields["data"]:
                        seen.append((fields["id"], fields["event"], fields["data"]))
                    fields = {"id": "", "event": "message", "data": ""}
                elif not line.startswith(":"):
                    key, _, value = line.partition(":")
                    fields[key] = value.strip()
        return seen

    full = read_stream(None)
    assert full[-1][1] == "end"
    ids = [int(i) for i, kind, _ in full if kind == "message"]
    assert ids == list(range(1, len(ids) + 1))
    assert json.loads(full[-2][2])["type"] == "server"

    later = read_stream(3)
    assert [int(i) for i, kind, _ in later if kind == "message"] == ids[3:]
    assert alice.job(job["jobId"])["status"] == "completed"


def test_list_filters_and_pages(job_world: JobWorldFactory) -> None:
    alice = job_world().member()
    made = [alice.create_job(alice.repo, f"job {i}")["jobId"] for i in range(5)]
    first = alice.http.get("/jobs", params={"limit": 2}).json()
    assert [j["jobId"] for j in first["jobs"]] == made[::-1][:2]
    second = alice.http.get("/jobs", params={"limit": 2, "cursor": first["nextCursor"]}).json()
    assert [j["jobId"] for j in second["jobs"]] == made[::-1][2:4]
    created = alice.http.get("/jobs", params={"status": "created"}).json()["jobs"]
    assert len(created) == 5
    assert alice.http.get("/jobs", params={"status": "bogus"}).status_code == 400
    assert alice.http.get("/jobs", params={"cursor": "%%%"}).status_code == 400


def test_the_list_shows_each_job_as_its_own_answer_does(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic
) -> None:
    """The list is read apart from GET /jobs/{id} (fewer columns, no models): the same job
    looks the same in both, queue positions included."""
    fake_anthropic.add_script("hang-listed", [Hang()])
    world = job_world(MAX_CONCURRENT_JOBS="1")
    alice, bob = world.member(), world.member()
    running = alice.run(alice.repo, f"Hang {marker('hang-listed')}")
    alice.wait_status(running["jobId"], {"running"})
    queued = [alice.run(alice.repo, f"Wait {i}")["jobId"] for i in range(2)]
    bobs = bob.run(bob.repo, "Wait too")["jobId"]
    created = alice.create_job(alice.repo, "Not started", options={"maxTurns": 3})["jobId"]

    listed = alice.http.get("/jobs").json()["jobs"]
    assert [job["jobId"] for job in listed] == [created, *queued[::-1], running["jobId"]]
    assert [job["queuePosition"] for job in listed] == [None, 2, 1, None]
    for job in listed:
        assert job == alice.job(job["jobId"])
    # the other user's queued job counts in the positions, and is not listed
    assert bob.job(bobs)["queuePosition"] == 3
    assert bobs not in {job["jobId"] for job in listed}
    assert alice.http.post(f"/jobs/{running['jobId']}/cancel").status_code == 202


def test_a_queue_position_in_the_list_moves_when_another_users_job_leaves_the_queue(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic
) -> None:
    """None of her jobs changed, yet her listing did: a server keeps a listing's page only
    while none of her jobs changes (api/listings.py), and never one with queued jobs."""
    fake_anthropic.add_script("hang-ahead", [Hang()])
    world = job_world(MAX_CONCURRENT_JOBS="1")
    alice, bob = world.member(), world.member()
    running = bob.run(bob.repo, f"Hang {marker('hang-ahead')}")["jobId"]
    bob.wait_status(running, {"running"})
    ahead = bob.run(bob.repo, "Wait first")["jobId"]
    queued = [alice.run(alice.repo, f"Wait {i}")["jobId"] for i in range(2)]

    for _ in range(2):
        listed = alice.http.get("/jobs").json()["jobs"]
        assert [job["queuePosition"] for job in listed] == [3, 2]
    assert bob.http.post(f"/jobs/{ahead}/cancel").status_code == 202
    listed = alice.http.get("/jobs").json()["jobs"]
    assert [(job["jobId"], job["queuePosition"]) for job in listed] == [
        (queued[1], 2),
        (queued[0], 1),
    ]
    assert bob.http.post(f"/jobs/{running}/cancel").status_code == 202


def test_the_agent_cannot_touch_the_repository(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic
) -> None:
    world = job_world()
    alice = world.member()
    stored = stored_repository(world.server, alice.user.name, alice.repo)
    before = subprocess.run(
        ["sha256sum", "README.md"], cwd=stored, capture_output=True, text=True, check=True
    ).stdout
    command = f"echo pwned >> {stored}/README.md; touch {stored}/new"
    fake_anthropic.add_script("tamper", [bash(command), text("Tried.")])
    job = alice.run(alice.repo, f"Try {marker('tamper')}")
    alice.wait_ended(job["jobId"])
    after = subprocess.run(
        ["sha256sum", "README.md"], cwd=stored, capture_output=True, text=True, check=True
    ).stdout
    assert before == after and not (stored / "new").exists()
