"""DATA_DIR made private at every start, also where an older version left it readable.

The server runs with umask 077, so whatever it makes from then on is its own; this puts
right what exists already. Closing each top-level entry closes everything beneath it.
Users pass through DATA_DIR, `workspaces/`, `staging/` and `tmp/` (--x) to the folders of
their own below them, and list none of them (another server on the same DATA_DIR may be
running jobs in them while this one starts).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

from sqlalchemy.engine import make_url

PASS_THROUGH: Final = 0o711
PASSED_THROUGH: Final = frozenset({"workspaces", "staging", "tmp"})


def prepare(data_dir: Path, database_url: str) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(PASS_THROUGH)
    with os.scandir(data_dir) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                mode = PASS_THROUGH if entry.name in PASSED_THROUGH else 0o700
                _narrow(Path(entry.path), mode)
            else:
                _narrow(Path(entry.path), None)
    for path in _sqlite_files(database_url):
        _narrow(path, None)


def _narrow(path: Path, mode: int | None) -> None:
    """`mode` for a folder, owner-only for a file; only for what this process owns, never
    through a link."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if st.st_uid != os.geteuid() or stat.S_ISLNK(st.st_mode):
        return
    wanted = stat.S_IMODE(st.st_mode) & 0o700 if mode is None else mode
    if stat.S_IMODE(st.st_mode) != wanted:
        path.chmod(wanted)


def _sqlite_files(database_url: str) -> list[Path]:
    """The SQLite database and its journal files, wherever DATABASE_URL put them."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database:
        return []
    database = Path(url.database)
    return [database.with_name(database.name + suffix) for suffix in ("", "-wal", "-shm")]
