"""What every command needs: the global options, the output, a client of the server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer

from claude_batch_server.client import config
from claude_batch_server.client.errors import UNREACHABLE, Failure
from claude_batch_server.client.http import Api
from claude_batch_server.client.output import Output

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON instead, for scripts.")
]
ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        "-s",
        envvar=config.SERVER_ENV,
        help="The server's URL (default: the one of the last login).",
        show_envvar=True,
    ),
]


@dataclass
class Globals:
    server: str | None = None
    json: bool = False


def globals_of(ctx: typer.Context) -> Globals:
    found = ctx.find_root().obj
    return found if isinstance(found, Globals) else Globals()


def output(ctx: typer.Context, json_mode: bool) -> Output:
    return Output(json_mode or globals_of(ctx).json)


def api(ctx: typer.Context) -> Api:
    """A client logged in to the chosen server; the token is never sent anywhere else."""
    saved = config.load()
    server = config.server_url(globals_of(ctx).server, saved)
    if saved is None:
        raise Failure("not logged in: run `claude-batch login`", UNREACHABLE)
    if saved.server != server:
        raise Failure(
            f"not logged in to {server} (the login is for {saved.server}): "
            "run `claude-batch login`",
            UNREACHABLE,
        )
    return Api(server, saved.token)
