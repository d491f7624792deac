"""Doctor checks for the store's files: the SQLite database, the data folder, free disk space.

Read-only: they never migrate or create the database (``check_data_dir(create=True)``, used by
the start-up preflight, only makes the data folder the bot would make anyway).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

from core.checks import Check
from core.config import Settings
from core.errors import UserInputError
from core.store import SCHEMA_VERSION, Store, has_sqlite_header


def check_database(settings: Settings) -> Check:
    """Does the SQLite file open, is it intact, and is it at the schema this version expects?

    Read-only: the doctor never migrates or creates the database.
    """
    path = settings.db_path
    if not path.exists():
        return Check(
            "database",
            "ok",
            f"no database yet at {path}; it is created on the first start",
        )
    if path.is_dir():
        return Check(
            "database",
            "fail",
            f"database path {path} is a folder",
            "move that folder away, or point data_dir somewhere else",
        )
    corrupt_fix = (
        f"stop the bot, move {path} aside (keep it for recovery) and restore a backup, "
        "or start fresh (a new database is created on start)"
    )
    if not has_sqlite_header(path):
        return Check(
            "database", "fail", f"{path} is not an SQLite database (corrupt?)", corrupt_fix
        )
    try:
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            integrity = db.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.Error as exc:
        return Check("database", "fail", f"{path} cannot be read: {exc}", corrupt_fix)
    if integrity != "ok":
        return Check("database", "fail", f"{path} is damaged: {integrity}", corrupt_fix)
    if version > SCHEMA_VERSION:
        return Check(
            "database",
            "fail",
            f"{path} has schema version {version}, newer than this imagine-bot understands "
            f"({SCHEMA_VERSION}); it was written by a newer release",
            "upgrade imagine-bot (or restore the backup made before the upgrade)",
        )
    if version < SCHEMA_VERSION:
        return Check(
            "database",
            "warn",
            f"{path} is at schema version {version}; it is upgraded to {SCHEMA_VERSION} "
            "on the next start",
            f"back up {path} before starting the new version",
        )
    try:
        asyncio.run(_open_and_close(path))
    except UserInputError as exc:
        return Check("database", "fail", str(exc), corrupt_fix)
    return Check("database", "ok", f"{path} opens, schema version {version} (current)")


async def _open_and_close(path: Path) -> None:
    store = await Store.open(path, create=False)
    await store.close()


def check_data_dir(settings: Settings, *, create: bool = False) -> Check:
    """Can the bot write its database, images and keys? Tested by writing, not by mode bits.

    Mode bits lie (root ignores them; read-only mounts and Docker volumes owned by another uid
    do not show in them), so the check creates and removes a small file.
    """
    path = settings.data_dir
    if path.exists() and not path.is_dir():
        return Check(
            "data dir",
            "fail",
            f"data_dir {path} is a file, not a folder",
            "point data_dir (IMAGINE_DATA_DIR) at a folder",
        )
    probe = path
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return _not_writable(path, exc)
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        return Check(
            "data dir",
            "fail",
            f"data_dir {path} cannot be created: {probe} is a file",
            "point data_dir (IMAGINE_DATA_DIR) at a folder",
        )
    for folder in [probe] + [d for d in (settings.images_dir, settings.keys_dir) if d.is_dir()]:
        try:
            fd, name = tempfile.mkstemp(prefix=".imagine-write-test-", dir=folder)
            os.close(fd)
            os.unlink(name)
        except OSError as exc:
            return _not_writable(folder, exc)
    note = "" if path.exists() else f" (created on first start; {probe} is writable)"
    return Check("data dir", "ok", f"data folder {path} is writable{note}")


def _not_writable(folder: Path, exc: OSError) -> Check:
    return Check(
        "data dir",
        "fail",
        f"cannot write in {folder}: {exc.strerror or exc}",
        "make the folder writable for the user running the bot (in Docker: uid 10001, "
        "e.g. chown -R 10001 on the host folder), or point data_dir at a writable folder; "
        "a read-only mount cannot hold the database",
    )


def check_disk(settings: Settings) -> Check:
    path = settings.data_dir
    while not path.exists():
        path = path.parent
    free_mb = shutil.disk_usage(path).free / 1024**2
    need = settings.ops.min_free_disk_mb
    if free_mb < need:
        return Check(
            "disk",
            "fail",
            f"only {free_mb:.0f} MB free where data_dir lives ({path}); the bot needs at "
            f"least {need} MB (ops.min_free_disk_mb) for images and the database",
            "free disk space (old images are in data_dir/images), or move data_dir to a "
            "bigger disk",
        )
    return Check("disk", "ok", f"{free_mb / 1024:.1f} GB free for data_dir ({path})")
