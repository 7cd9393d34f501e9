"""`claude-batch files`, `get` and `diff`: what a job left in its workspace."""

from __future__ import annotations

import json
from pathlib import Path

from tests.client.support import CliWorld
from tests.fake_anthropic import FakeAnthropic, bash, marker, text

CHANGES = (
    "echo 'a new line' >> README.md && mkdir -p notes && echo 'fresh' > notes/new.txt "
    "&& head -c 300000 /dev/urandom > blob.bin && rm src/app.py"
)


def changed_job(cli_world: CliWorld, fake: FakeAnthropic) -> str:
    fake.add_script("cli-change-things", [bash(CHANGES), text("Changed.")])
    out = cli_world.cli.ok("run", cli_world.repo, f"Change {marker('cli-change-things')}", "-f")
    return out.splitlines()[0].split()[1]


def test_files_get_and_diff(
    cli_world: CliWorld, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    cli, member = cli_world.cli, cli_world.member
    job_id = changed_job(cli_world, fake_anthropic)
    workspace = cli_world.world.server.data_dir / "workspaces" / job_id

    listing = cli.ok("files", job_id).splitlines()
    assert listing[0].split() == ["SIZE", "MODIFIED", "NAME"]
    names = [line.split()[-1] for line in listing[1:]]
    assert {"notes/", "src/", "README.md", "blob.bin"} <= set(names)
    nested = json.loads(cli.ok("files", job_id, "notes", "--json"))
    assert [(e["path"], e["size"]) for e in nested] == [("notes/new.txt", 6)]

    into = tmp_path / "downloads"
    into.mkdir()
    saved = cli.ok("get", job_id, "blob.bin", "-o", str(into))
    assert saved == f"{into / 'blob.bin'} (293.0 KiB)\n"
    assert (into / "blob.bin").read_bytes() == (workspace / "blob.bin").read_bytes()
    assert [p.name for p in into.iterdir()] == ["blob.bin"]  # no partial file left behind
    assert cli.ok("get", job_id, "notes/new.txt", "-o", "-") == "fresh\n"
    assert cli.run("get", job_id, "notes/new.txt").returncode == 0
    assert (cli.home / "new.txt").read_text() == "fresh\n"
    missing = cli.run("get", job_id, "nothing/here.txt", "-o", str(tmp_path / "x"))
    assert missing.returncode == 1 and len(missing.stderr.splitlines()) == 1
    assert not (tmp_path / "x").exists() and not (tmp_path / ".x.part").exists()
    nowhere = cli.run("get", job_id, "notes/new.txt", "-o", str(tmp_path / "no" / "such"))
    assert nowhere.returncode == 2
    assert nowhere.stderr.startswith("claude-batch: cannot write ")

    piped = cli.ok("diff", job_id)
    assert piped == member.http.get(f"/jobs/{job_id}/diff").text
    assert "+a new line" in piped and "\x1b[" not in piped
    code, shown = cli.on_terminal("diff", job_id)
    assert code == 0
    assert "\x1b[32m+a new line" in shown  # green on a terminal
    assert "\x1b[31m-print('hi')" in shown
    code, shown = cli.on_terminal("get", job_id, "blob.bin", "-o", str(tmp_path / "b.bin"))
    assert code == 0 and "293.0/293.0 KiB" in shown  # the progress bar, at its end
