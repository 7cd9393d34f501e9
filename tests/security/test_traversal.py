"""No byte from outside the workspace is served, whatever path is asked for and whatever
the agent left in the workspace: links out, hardlinks, FIFOs, sockets, devices, huge files,
and names that are not UTF-8."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import httpx

from tests.fake_anthropic import FakeAnthropic, bash, marker, text
from tests.jobs.conftest import JobWorldFactory
from tests.security.conftest import Attacks
from tests.support.api import Api, home_of

ROUTES = ["files", "files/download", "files/content"]
SECRET = Path("/etc/shadow").read_bytes()[:40]
# What a hostile agent leaves behind, made for real by Claude Code's Bash tool.
TRAPS = (
    "ln -s /etc/shadow shadow-link && ln -s /etc etc-link && ln -s .. up-link "
    "&& ln ~/outside.txt hard-link && mkfifo fifo && truncate -s 5G huge.bin "
    "&& python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind(\"sock\")' "
    "&& touch \"$(printf 'new\\nline')\" \"$(printf 'bad\\377name')\" "
    "&& mkdir -p deep && ln -s /etc/shadow deep/inner-link && echo ok > plain.txt"
)
PATHS = [
    "..",
    "../..",
    "../../../../etc/shadow",
    "/etc/shadow",
    "//etc/shadow",
    "./../x",
    "a/../../etc/shadow",
    "%2e%2e",
    "%2e%2e/%2e%2e/etc/shadow",
    "%252e%252e/etc/shadow",
    "..%2fetc%2fshadow",
    "..\\..\\etc\\shadow",
    "\\etc\\shadow",
    "plain.txt\x00.png",
    "x" * 5000,
    ("a/" * 3000) + "b",
    "shadow-link",
    "etc-link/shadow",
    "etc-link",
    "up-link/server.db",
    "up-link",
    "deep/inner-link",
    "hard-link",
    "fifo",
    "sock",
    "/proc/self/environ",
    "~/.ssh/id_rsa",
    "\u2025/etc/shadow",
    ".git/../../etc/shadow",
]


def hostile_job(world: JobWorldFactory, fake: FakeAnthropic) -> tuple[Api, str]:
    fake.add_script("traps", [bash(TRAPS), text("Traps laid.")])
    # without the sandbox, which refuses the hard link to a file outside the workspace: the
    # file routes must refuse it themselves, also where the kernel offers no Landlock
    alice = world(JOB_SANDBOX="off").member()
    outside = home_of(alice.user) / "outside.txt"
    outside.write_text("OUTSIDE-THE-WORKSPACE\n")
    os.chown(outside, alice.user.uid, alice.user.uid)
    job = alice.run(alice.repo, f"Lay traps {marker('traps')}")
    assert alice.wait_ended(job["jobId"])["status"] == "completed"
    return alice, job["jobId"]


def leaked(response: httpx.Response) -> bool:
    return SECRET in response.content or b"OUTSIDE-THE-WORKSPACE" in response.content


def test_traversal_corpus(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic, attacks: Attacks
) -> None:
    alice, job_id = hostile_job(job_world, fake_anthropic)
    for route in ROUTES:
        for path in PATHS:
            response = alice.http.get(f"/jobs/{job_id}/{route}", params={"path": path}, timeout=10)
            attacks.tried()
            assert response.status_code in (400, 404, 422), (route, path, response.status_code)
            assert not leaked(response), (route, path)
        for raw in ["..%2F..%2Fetc%2Fshadow", "%2e%2e%2f%2e%2e%2fetc%2fshadow", "%00", "%c0%ae"]:
            response = alice.http.get(f"/jobs/{job_id}/{route}?path={raw}", timeout=10)
            attacks.tried()
            assert response.status_code in (400, 404, 422) and not leaked(response), raw
    assert alice.http.get("/health").status_code == 200


def test_hostile_entries_are_hidden_or_refused(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic, attacks: Attacks
) -> None:
    alice, job_id = hostile_job(job_world, fake_anthropic)
    listing = alice.http.get(f"/jobs/{job_id}/files").json()
    names = {entry["name"] for entry in listing}
    attacks.tried()
    assert "plain.txt" in names and "huge.bin" in names and "new\nline" in names
    assert not names & {"shadow-link", "etc-link", "up-link", "fifo", "sock"}
    assert all(entry["type"] in ("file", "directory") for entry in listing)
    assert "hard-link" in names  # listed, but its bytes are refused below

    big = alice.http.get(f"/jobs/{job_id}/files/content", params={"path": "huge.bin"})
    attacks.tried()
    assert big.status_code == 413
    started = time.monotonic()
    with alice.http.stream(
        "GET", f"/jobs/{job_id}/files/download", params={"path": "huge.bin"}
    ) as response:
        assert response.headers["content-length"] == str(5 * 1024**3)
        first = next(response.iter_bytes())
    attacks.tried()
    assert first.strip(b"\0") == b"" and time.monotonic() - started < 30
    ranged = alice.http.get(
        f"/jobs/{job_id}/files/download",
        params={"path": "huge.bin"},
        headers={"Range": "bytes=5368709100-"},
    )
    assert ranged.status_code == 206 and len(ranged.content) == 20
    odd = alice.http.get(f"/jobs/{job_id}/files/content", params={"path": "new\nline"})
    assert odd.status_code == 200 and odd.json()["content"] == ""
    assert alice.http.get("/health").status_code == 200


def test_a_symlink_swapped_in_during_downloads(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic, attacks: Attacks
) -> None:
    alice, job_id = hostile_job(job_world, fake_anthropic)
    workspace = alice.server.data_dir / "workspaces" / job_id
    target = workspace / "swap.txt"
    original = b"innocent bytes\n" * 1000
    stop = threading.Event()

    def swapper() -> None:
        # what an agent still running could do: flip a file between real and a link out
        while not stop.is_set():
            spare = workspace / "swap.tmp"
            spare.write_bytes(original)
            spare.replace(target)
            link = workspace / "swap.lnk"
            link.unlink(missing_ok=True)
            link.symlink_to("/etc/shadow")
            link.replace(target)

    thread = threading.Thread(target=swapper)
    thread.start()
    try:
        for _ in range(150):
            for route in ["files/download", "files/content"]:
                response = alice.http.get(f"/jobs/{job_id}/{route}", params={"path": "swap.txt"})
                attacks.tried()
                assert response.status_code in (200, 404), response.status_code
                assert not leaked(response)
    finally:
        stop.set()
        thread.join()
