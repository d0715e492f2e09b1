"""The data folder is private to the user the suite runs as.

It holds password hashes (``im.db``), plaintext messages (``messages.db``), revoked
sessions and idempotency keys (``state.db``) and the dev JWT private key: no other
local user may read any of it. ``prepare`` makes it so on every start, also for a
folder an older version created world-readable.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("im.datadir")

DIR_MODE = 0o700
FILE_MODE = 0o600
# Files created later by this process (SQLite's -wal, -shm and -journal files, logs,
# keys, new databases) get no group or other bits, whatever the inherited umask says.
PRIVATE_UMASK = 0o077


def prepare(folder: Path) -> Path:
    """Create ``folder`` 0700 (or tighten it), make every regular file directly in it
    0600, and set the process umask to 0o077. Returns the folder.

    Raises ``PermissionError`` when the folder cannot be made private (owned by
    another user): starting anyway would keep the data readable.
    """
    os.umask(PRIVATE_UMASK)
    folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _tighten(folder, DIR_MODE)
    for entry in folder.iterdir():
        # Symlinks are left alone: chmod would follow them to whatever they name.
        if entry.is_file() and not entry.is_symlink():
            _tighten(entry, FILE_MODE)
    return folder


def _tighten(path: Path, mode: int) -> None:
    current = stat.S_IMODE(path.lstat().st_mode)
    if current & ~mode == 0:
        return  # already as private as required (or more)
    try:
        path.chmod(mode)
    except PermissionError as exc:
        raise PermissionError(
            f"{path} is mode {current:o} and cannot be made {mode:o}: "
            "make it private to this user (chown/chmod) before starting"
        ) from exc
    log.warning("%s was mode %o, readable by other users: now %o", path, current, mode)
