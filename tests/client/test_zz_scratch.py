from tests.client.support import CliWorld
from tests.fake_anthropic import marker, write_file, bash, text


def test_show(cli_world: CliWorld, tmp_path, fake_anthropic) -> None:
    cli = cli_world.cli
    fake_anthropic.add_script("demo", [text("I'll add the route and a test."), ])
    fake_anthropic.add_script("demo", [write_file("app/health.py", "def health():\n    return {'status': 'ok'}\n"), bash("python -m pytest -q", "Run the tests"), text("Added app/health.py.")])
    for args in (["whoami"], ["run", cli_world.repo, f"Add a health route {marker('demo')}", "--follow"]):
        r = cli.run(*args)
        print("$", *args, r.returncode); print(r.stdout, r.stderr)
    job_id = cli.run("jobs", "list", "--json").stdout.split('"jobId": "')[1][:32]
    prompts = tmp_path / "p.txt"
    prompts.write_text(f"a {marker('hello')}\nb {marker('bad-request')}\nc {marker('write-file')}\n")
    for args in (["run", cli_world.repo, "--prompts-file", str(prompts)], ["jobs", "list"], ["files", job_id], ["files", job_id, "app"], ["get", job_id, "app/health.py"], ["diff", job_id], ["logout"]):
        r = cli.run(*args)
        print("$", *args, r.returncode); print(r.stdout, r.stderr)
