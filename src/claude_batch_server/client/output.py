"""Where results go: rich text for a person, or JSON for a script (`--json`)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rich.console import Console, RenderableType
from rich.text import Text

PIPED_WIDTH = 200


class Output:
    def __init__(self, json_mode: bool) -> None:
        self.json = json_mode
        # Colours only on a terminal; rich honours NO_COLOR and FORCE_COLOR as well. Piped
        # output is not cut to 80 columns: a file has no width.
        piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
        self.console = Console(highlight=False, width=PIPED_WIDTH if piped else None)
        self.errors = Console(stderr=True, highlight=False)

    @property
    def live(self) -> bool:
        """Whether a live display (status line, table) may redraw itself on stdout."""
        return not self.json and self.console.is_terminal

    def data(self, value: Any) -> None:
        sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def json_line(self, value: Any) -> None:
        sys.stdout.write(json.dumps(value, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def show(self, renderable: RenderableType) -> None:
        if isinstance(renderable, str):
            renderable = Text(renderable)  # text from the server is never rich markup
        # soft_wrap: long lines are the terminal's to wrap, so piped text stays unbroken
        self.console.print(renderable, soft_wrap=isinstance(renderable, Text))

    def text(self, text: str, style: str = "") -> None:
        self.show(Text(text, style=style))

    def note(self, text: str) -> None:
        """Remarks about the client's own doings (reconnecting…): on stderr, out of the way."""
        self.errors.print(Text(text, style="dim yellow"), soft_wrap=True)
