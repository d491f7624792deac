"""The data directory holds private things: prompts and live interaction tokens (the database),
users' uploads and results, the C2PA signing key. Other local users must not read them, whatever
umask the admin's shell or service manager set.

Three layers: the process creates everything owner-only (``private_umask``), the data directory
and its known sub-folders are 0700 and the database files 0600 on every start
(``secure_data_dir``; this also repairs files made by an older version or restored from a
backup), and ``Store.open`` creates its file 0600 itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

from core.config import Settings

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_umask() -> int:
    """New files of this process: owner only. Returns the previous umask."""
    return os.umask(0o077)


def make_private_dir(path: Path) -> None:
    """Create ``path`` owner-only; an existing folder is left as it is (it may be shared)."""
    if not path.exists():
        path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        _chmod(path, DIR_MODE)  # mkdir's mode is filtered by the umask


def secure_data_dir(settings: Settings) -> None:
    """Owner-only modes for the data directory, its folders, the database and the keys."""
    data = Path(settings.data_dir)
    make_private_dir(data)
    _chmod(data, DIR_MODE)  # the admin's data_dir is the bot's alone
    for folder in (settings.images_dir, settings.keys_dir):
        if folder.is_dir():
            _chmod(folder, DIR_MODE)
    db = Path(settings.db_path)
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        if path.is_file():
            _chmod(path, FILE_MODE)
    keys = Path(settings.keys_dir)
    if keys.is_dir():
        for path in keys.rglob("*"):
            _chmod(path, DIR_MODE if path.is_dir() else FILE_MODE)


def _chmod(path: Path, mode: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_IMODE(path.stat().st_mode) != mode:
            try:
                path.chmod(mode)
            except OSError as exc:  # e.g. a volume owned by another user: say so, carry on
                log.warning("cannot make %s private (mode %o): %s", path, mode, exc.strerror)
