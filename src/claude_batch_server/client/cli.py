"""`claude-batch`: the commands. Each is thin: the work is in the modules beside this one."""

from __future__ import annotations

import getpass
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from claude_batch_server.client import batch, config, results, submit, tail, transfer, views
from claude_batch_server.client.context import (
    Globals,
    JsonOption,
    ServerOption,
    api,
    globals_of,
    output,
)
from claude_batch_server.client.errors import UNREACHABLE, USAGE, Failure
from claude_batch_server.client.follow import events_so_far
from claude_batch_server.client.http import Api
from claude_batch_server.client.jobs import jobs_app
from claude_batch_server.client.output import Output
from claude_batch_server.client.repos import repos_app
from claude_batch_server.client.submit import JobSpec

app = typer.Typer(
    name="claude-batch",
    help="Run Claude Code batch jobs on a Claude Batch Server.",
    epilog=(
        "Exit codes: 0 every job completed; 1 a job failed, timed out or was cancelled, or "
        "the server refused the request; 2 usage error; 3 the server cannot be reached or "
        "refuses the login."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(repos_app, name="repos")
app.add_typer(jobs_app, name="jobs")

JobId = Annotated[str, typer.Argument(help="The job's id.")]


@app.callback()
def root(ctx: typer.Context, server: ServerOption = None, json_mode: JsonOption = False) -> None:
    # the global options, for the commands to read; their own --json adds to this one
    ctx.obj = Globals(server, json_mode)


# ------------------------------------------------------------------------------- login


def _password(from_stdin: bool, user: str, server: str) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise Failure("no password on standard input", USAGE)
        password = line.rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass(f"Password for {user} at {server}: ")
    else:
        raise Failure("no terminal to ask for the password on: use --password-stdin", USAGE)
    if not password:
        raise Failure("the password is empty", USAGE)
    return password


@app.command()
def login(
    ctx: typer.Context,
    server: ServerOption = None,
    user: Annotated[
        str | None, typer.Option("--user", "-u", help="Account name (default: yours here).")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    json_mode: JsonOption = False,
) -> None:
    """Log in with your account on the server's machine; the token is kept in
    ~/.config/claude-batch/ (mode 0600)."""
    out = output(ctx, json_mode)
    try:
        saved = config.load()
    except Failure:
        saved = None  # a broken credentials file is about to be replaced anyway
    url = config.server_url(server or globals_of(ctx).server, saved)
    name = user or getpass.getuser()
    password = _password(password_stdin, name, url)
    body = Api(url).post("/auth/login", {"username": name, "password": password})
    saved = config.Credentials(url, str(body["user"]), str(body["token"]), str(body["expires"]))
    path = config.save(saved)
    if out.json:
        out.data({"server": url, "user": saved.user, "expires": saved.expires})
    else:
        out.text(f"Logged in to {url} as {saved.user} (until {saved.expires}); token in {path}")


@app.command()
def logout(ctx: typer.Context, json_mode: JsonOption = False) -> None:
    """Revoke the token on the server and forget it here."""
    out = output(ctx, json_mode)
    saved = config.load()
    if saved is None:
        out.data({"revoked": False}) if out.json else out.text("Not logged in.")
        return
    try:
        Api(saved.server, saved.token).post("/auth/logout")
    except Failure as failure:
        if failure.status != 401:  # 401: the token was no longer valid anyway
            config.remove()
            out.note(f"forgot the token here, but the server was not told: {failure.message}")
            raise typer.Exit(UNREACHABLE) from None
    config.remove()
    out.data({"revoked": True}) if out.json else out.text(f"Logged out of {saved.server}.")


@app.command()
def whoami(ctx: typer.Context, json_mode: JsonOption = False) -> None:
    """Who the server takes you for."""
    out = output(ctx, json_mode)
    client = api(ctx)
    me = client.get("/auth/me")
    if out.json:
        out.data({**me, "server": client.server})
        return
    admin = ", admin" if me.get("admin") else ""
    out.text(f"{me['user']} (uid {me['uid']}{admin}) at {client.server}")
    out.text(f"groups: {', '.join(me.get('groups') or [])}", style="dim")


# --------------------------------------------------------------------------------- run


@app.command()
def run(
    ctx: typer.Context,
    repository: Annotated[str, typer.Argument(help="One of your repositories.")],
    prompt: Annotated[
        str | None, typer.Argument(help="What Claude Code should do ('-': read stdin).")
    ] = None,
    image: Annotated[
        list[Path] | None,
        typer.Option(
            "--image",
            "-i",
            help="An image for the prompt (repeatable).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    model: Annotated[str | None, typer.Option(help="The model to use.")] = None,
    max_turns: Annotated[int | None, typer.Option(min=1, help="At most this many turns.")] = None,
    timeout: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many seconds.")
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream the job until it ends.")
    ] = False,
    branch: Annotated[
        str | None,
        typer.Option(
            "--branch",
            metavar="[NAME]",
            help=(
                "Once completed, push the changes as branch NAME with your git credentials;"
                " alone (last, or before another option): claude-batch/JOB_ID."
            ),
        ),
    ] = None,
    prompts_file: Annotated[
        Path | None,
        typer.Option(
            "--prompts-file",
            help="Many jobs: one prompt per line, or JSON Lines with options ('-': stdin).",
        ),
    ] = None,
    owner: Annotated[
        str | None,
        typer.Option(
            "--owner", help="Run on another user's repository (admins only).", show_default=False
        ),
    ] = None,
    json_mode: JsonOption = False,
) -> None:
    """Create a job, upload its images and start it: prints its id, or with --follow
    streams it until it ends. With --prompts-file, a batch: a live table, then a summary."""
    out = output(ctx, json_mode)
    options = submit.options(model, max_turns, timeout) | results.branch_option(branch)
    template = JobSpec(repository, "", options, tuple(image or ()), owner=owner)
    if (prompt is None) == (prompts_file is None):
        raise Failure("give either a PROMPT or --prompts-file FILE", USAGE)
    if prompts_file is not None:
        specs = batch.read_prompts(_read(prompts_file), template, _folder(prompts_file))
        _run_batch(api(ctx), specs, out)
    client = api(ctx)
    spec = replace(template, prompt=sys.stdin.read() if prompt == "-" else str(prompt))
    (started,) = submit.submit(client, [spec])
    _started(client, started, follow, out)


def _read(path: Path) -> str:
    try:
        return sys.stdin.read() if str(path) == "-" else path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise Failure(f"cannot read {path}: {error}", USAGE) from None


def _folder(path: Path) -> Path:
    """Where the image paths of a prompts file start from: the file's own folder."""
    return Path.cwd() if str(path) == "-" else path.resolve().parent


def _run_batch(client: Api, specs: list[JobSpec], out: Output) -> NoReturn:
    started = submit.submit(client, specs)
    if not out.json:
        out.text(f"Started {len(started)} jobs.", style="dim")
    jobs = batch.watch(client, [str(job["jobId"]) for job in started], out)
    if out.json:
        out.data({"jobs": jobs, **views.summary_counts(jobs)})
    raise typer.Exit(tail.exit_code(jobs))


def _started(client: Api, started: dict[str, Any], follow: bool, out: Output) -> None:
    job_id = str(started["jobId"])
    if not follow:
        out.data(started) if out.json else out.show(job_id)
        return
    if not out.json:
        position = started.get("queuePosition")
        where = f" at position {position}" if position is not None else ""
        out.text(f"job {job_id} {started['status']}{where}", style="dim")
    job = results.settled(client, tail.follow(client, job_id, out, events=not out.json))
    if out.json:
        out.data(job)
    else:
        results.show(job, out)
    raise typer.Exit(tail.exit_code([job]))


# -------------------------------------------------------------------------------- logs


@app.command()
def logs(
    ctx: typer.Context,
    job_id: JobId,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep streaming until the job ends.")
    ] = False,
    json_mode: JsonOption = False,
) -> None:
    """The job's transcript: the agent's text, its tool calls and errors, the result."""
    out = output(ctx, json_mode)
    client = api(ctx)
    if not follow:
        tail.show_events(events_so_far(client, job_id), out)
        return
    job = tail.follow(client, job_id, out)
    raise typer.Exit(tail.exit_code([job]))


# ------------------------------------------------------------------------------- files


@app.command()
def files(
    ctx: typer.Context,
    job_id: JobId,
    path: Annotated[str, typer.Argument(help="A folder of the workspace.")] = "",
    json_mode: JsonOption = False,
) -> None:
    """List a folder of the job's workspace."""
    out = output(ctx, json_mode)
    entries = api(ctx).get(f"/jobs/{job_id}/files", path=path)
    out.data(entries) if out.json else out.show(views.files_table(entries))


@app.command()
def get(
    ctx: typer.Context,
    job_id: JobId,
    path: Annotated[str, typer.Argument(help="A file of the workspace.")],
    dest: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Where to write it: a file, a folder, or '-'."),
    ] = None,
    json_mode: JsonOption = False,
) -> None:
    """Download a file of the job's workspace (streamed, with a progress bar)."""
    out = output(ctx, json_mode)
    target = transfer.target(path, dest)
    written = transfer.download(api(ctx), job_id, path, target, out)
    if target is None:
        return
    if out.json:
        out.data({"path": path, "file": str(target), "size": written})
    else:
        out.text(f"{target} ({views.size(written)})")


@app.command()
def diff(ctx: typer.Context, job_id: JobId, json_mode: JsonOption = False) -> None:
    """What the job changed: coloured on a terminal, plain when piped."""
    out = output(ctx, json_mode)
    response = api(ctx).call("GET", f"/jobs/{job_id}/diff")
    if out.json:
        out.data({"jobId": job_id, "diff": response.text})
    elif out.console.is_terminal:
        out.console.print(views.coloured_diff(response.text), end="", soft_wrap=True)
    else:
        sys.stdout.buffer.write(response.content)  # byte for byte, for `git apply`
        sys.stdout.flush()


@app.command()
def patch(ctx: typer.Context, job_id: JobId) -> None:
    """The job's changes as one commit of yours, in mbox form on stdout: `| git am`."""
    response = api(ctx).call("GET", f"/jobs/{job_id}/patch")
    sys.stdout.buffer.write(response.content)  # byte for byte: binary files included
    sys.stdout.flush()


def main() -> None:
    """The entry point: expected failures are one line on stderr and an exit code."""
    try:
        app(args=results.branch_flag(sys.argv[1:]))
    except Failure as failure:
        sys.stderr.write(f"claude-batch: {failure.message}\n")
        sys.exit(failure.code)
