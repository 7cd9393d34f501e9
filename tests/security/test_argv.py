"""Nothing a user wrote reaches a command line, which every local user can read
(issue 12, finding 7): while a job runs, another OS user reads every process's
/proc/PID/cmdline and finds no byte of the job's appended system prompt, model or tool
rules; the model still gets all of them."""

from __future__ import annotations

import secrets
import stat
import subprocess
from pathlib import Path

from tests.fake_anthropic import FakeAnthropic, Hang
from tests.jobs.conftest import JobWorldFactory
from tests.security.conftest import Attacks
from tests.support.server import wait_for
from tests.support.users import UserFactory

# Run as the other user: every process's command line as /proc shows it to them, one per
# line, its NUL separators turned into \x01.
READ_ALL = r"""
for f in /proc/[0-9]*/cmdline; do
  pid=${f#/proc/}; printf '%s\t' "${pid%/cmdline}"; tr '\000\n' '\001 ' < "$f" 2>/dev/null; echo
done
"""


def command_lines(as_uid: int) -> dict[str, str]:
    result = subprocess.run(
        ["sh", "-c", READ_ALL],
        user=as_uid,
        group=as_uid,
        extra_groups=[],
        capture_output=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    lines = {}
    for line in result.stdout.decode("utf-8", "replace").splitlines():
        pid, _, cmdline = line.partition("\t")
        lines[pid] = cmdline.replace("\x01", "\0")
    return lines


def readable_by(uid: int, path: str) -> bool:
    probe = subprocess.run(
        ["cat", path], user=uid, group=uid, extra_groups=[], capture_output=True, check=False
    )
    return probe.returncode == 0


def test_no_option_a_user_wrote_is_in_any_command_line(
    job_world: JobWorldFactory,
    users: UserFactory,
    fake_anthropic: FakeAnthropic,
    attacks: Attacks,
) -> None:
    world = job_world()
    alice = world.member()
    bob = users.create()
    tokens = [secrets.token_hex(12) for _ in range(4)]
    options = {
        "appendSystemPrompt": f"The launch code is {tokens[0]}.",
        "model": f"claude-private-{tokens[1]}",
        "allowedTools": [f"Read(/srv/{tokens[2]}/**)"],
        "disallowedTools": ["WebFetch", f"Bash(curl {tokens[3]}:*)"],
    }
    name = f"argv-{secrets.token_hex(4)}"
    script = fake_anthropic.add_script(name, [Hang()])
    job = alice.run(alice.repo, f"Wait {script}", options=options)["jobId"]
    request = fake_anthropic.wait_for(lambda r: r.script == name and not r.side)

    lines = command_lines(bob.uid)
    attacks.tried(len(lines))
    for pid, line in lines.items():
        for token in tokens:
            assert token not in line, (pid, line)
    agents = [line for line in lines.values() if "--append-system-prompt-file=" in line]
    assert agents, "the job's Claude Code process is not visible to other users at all"

    # the files: the job user's alone, in a folder of theirs
    path = next(
        part.partition("=")[2]
        for part in agents[0].split("\0")
        if part.startswith("--append-system-prompt-file=")
    )
    assert Path(path).read_text() == options["appendSystemPrompt"]
    for entry, mode in ((Path(path), 0o600), (Path(path).parent, 0o700)):
        info = entry.stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (alice.user.uid, mode)
    attacks.tried()
    assert not readable_by(bob.uid, path)

    assert tokens[0] in request.system
    assert request.model == options["model"]
    assert "WebFetch" not in request.tool_names and "Read" in request.tool_names

    assert alice.http.post(f"/jobs/{job}/cancel").status_code == 202
    assert alice.wait_ended(job)["status"] == "cancelled"
    wait_for(lambda: not Path(path).exists(), 30, "the private folder to be removed")
