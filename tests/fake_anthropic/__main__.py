"""Run the fake Anthropic API in its own process: ``python -m tests.fake_anthropic``.

(Run from the repository root.) Prints ``listening on URL`` once
ready and, with ``--port-file``, writes the port there. Scripts are added and
requests read through the control API: ``PUT /_fake/scripts/NAME`` with
``{"turns": [...]}`` (see ``script.turn_from_json``), ``GET``/``DELETE /_fake/requests``.
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from .server import FakeAnthropic


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fake_anthropic")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path)
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with FakeAnthropic(args.host, args.port) as fake:
        if args.port_file:
            args.port_file.write_text(str(fake.port))
        print(f"listening on {fake.url}", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
