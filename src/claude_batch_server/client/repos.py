"""`claude-batch repos …`: the repositories jobs run in."""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Annotated, Any

import typer

from claude_batch_server.client import views
from claude_batch_server.client.context import JsonOption, api, output
from claude_batch_server.client.errors import NOT_COMPLETED, Failure
from claude_batch_server.client.http import Api
from claude_batch_server.client.output import Output
from claude_batch_server.client.submit import whose

repos_app = typer.Typer(help="Register, list, pull and remove repositories.", no_args_is_help=True)

Name = Annotated[str, typer.Argument(help="The repository's name.")]
OwnerOption = Annotated[
    str | None,
    typer.Option("--owner", help="Another user's repository (admins only).", show_default=False),
]
POLL = 1.0  # seconds between looks at a repository being cloned
CLONE_DEADLINE = 3600.0


@repos_app.command("list")
def list_(
    ctx: typer.Context,
    owner: Annotated[
        str | None,
        typer.Option(
            "--owner",
            help="Another user's repositories, or '*' for everyone's (admins only).",
            show_default=False,
        ),
    ] = None,
    json_mode: JsonOption = False,
) -> None:
    """Your repositories (names are your own: other users may use the same ones)."""
    out = output(ctx, json_mode)
    repos = api(ctx).get("/repositories", **whose(owner))
    out.data(repos) if out.json else out.show(views.repos_table(repos))


@repos_app.command()
def show(
    ctx: typer.Context, name: Name, owner: OwnerOption = None, json_mode: JsonOption = False
) -> None:
    """One repository in full."""
    out = output(ctx, json_mode)
    repo = api(ctx).get(f"/repositories/{name}", **whose(owner))
    out.data(repo) if out.json else out.show(views.repo_details(repo))


@repos_app.command()
def register(
    ctx: typer.Context,
    name: Name,
    url: Annotated[str, typer.Argument(help="git URL, or a path on the server's machine.")],
    branch: Annotated[str | None, typer.Option(help="The branch (default: HEAD's).")] = None,
    description: Annotated[str, typer.Option(help="What it is.")] = "",
    wait: Annotated[bool, typer.Option(help="Wait until the clone is done.")] = False,
    json_mode: JsonOption = False,
) -> None:
    """Register a repository: the server clones it as you."""
    out = output(ctx, json_mode)
    client = api(ctx)
    body: dict[str, Any] = {"name": name, "gitUrl": url, "description": description}
    if branch:
        body["branch"] = branch
    repo = client.post("/repositories/register", body)
    if wait:
        repo = _cloned(client, name, out)
    out.data(repo) if out.json else out.show(views.repo_details(repo))
    if repo["status"] == "failed":
        raise typer.Exit(NOT_COMPLETED)


def _cloned(client: Api, name: str, out: Output) -> dict[str, Any]:
    deadline = time.monotonic() + CLONE_DEADLINE
    with out.console.status(f"cloning {name}…") if out.live else nullcontext():
        while True:
            repo: dict[str, Any] = client.get(f"/repositories/{name}")
            if repo["status"] != "cloning":
                return repo
            if time.monotonic() > deadline:
                raise Failure(f"{name} is still cloning after {CLONE_DEADLINE:g} s")
            time.sleep(POLL)


@repos_app.command()
def pull(
    ctx: typer.Context, name: Name, owner: OwnerOption = None, json_mode: JsonOption = False
) -> None:
    """Fetch the latest commit of the repository's branch (in the background)."""
    out = output(ctx, json_mode)
    repo = api(ctx).post(f"/repositories/{name}/pull", params=whose(owner))
    if out.json:
        out.data(repo)
    else:
        show = f"{name} --owner {owner}" if owner else name
        out.text(f"Pulling {name}; `claude-batch repos show {show}` shows when it is done.")


@repos_app.command("rm")
def remove(
    ctx: typer.Context, name: Name, owner: OwnerOption = None, json_mode: JsonOption = False
) -> None:
    """Remove a repository (not while jobs of it are queued or running)."""
    out = output(ctx, json_mode)
    api(ctx).delete(f"/repositories/{name}", params=whose(owner))
    out.data({"removed": name}) if out.json else out.text(f"Removed {name}.")
