"""The durable store: one SQLite file (WAL) holding jobs, images, policies and the audit log.

Why one file: a moderator's question "who made this?" joins images, jobs and moderation
decisions, and a restart must see exactly what was accepted. Schema changes are numbered
migrations applied at start-up; a file from a newer version is refused rather than guessed at.

``Store`` is put together from one class per concern, each in a sibling module: the job
lifecycle (add, run, finish, deliver, recover) and images in ``store_jobs.py``; retention, the
accepted-interaction journal and the ``kv`` table in ``store_journal.py``; the rows moderation
needs (policies, the audit log, provenance look-ups) in ``store_moderation.py``, whose rules stay
in ``moderation/``, which never touches ``store.db``; /describe's suggestions in
``store_describe.py``. This file opens and migrates the database. The bot's settings tables
(``bot/settings_store.py``) use ``store.db`` directly. The doctor's read-only checks of the file
are in ``core/store_checks.py``.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import aiosqlite

from core.errors import UserInputError
from core.private_files import make_private_dir
from core.store_describe import DescribeRows
from core.store_jobs import JobRows, Recovery
from core.store_journal import AcceptedInteraction, JournalRows
from core.store_moderation import ModerationRows

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SQLITE_MAGIC",
    "AcceptedInteraction",
    "Recovery",
    "Store",
    "StoreError",
    "has_sqlite_header",
]

SQLITE_MAGIC = b"SQLite format 3\x00"

# Append only: never edit a migration that has shipped. Index i upgrades version i -> i+1.
MIGRATIONS: list[str] = [
    # v1: everything the first release needs.
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL UNIQUE,
        guild_id INTEGER,
        channel_id INTEGER,
        user_id INTEGER NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('imagine', 'variation', 'upscale', 'reroll')),
        params TEXT NOT NULL,
        parent_job_id TEXT REFERENCES jobs(id),
        parent_image_index INTEGER,
        credited_user_ids TEXT NOT NULL DEFAULT '[]',
        status TEXT NOT NULL CHECK (status IN
            ('queued', 'running', 'done', 'failed', 'cancelled', 'blocked')),
        weight REAL NOT NULL DEFAULT 1.0,
        est_cost REAL NOT NULL,
        measured_seconds REAL,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        delivered_at REAL,
        error TEXT,
        result_dir TEXT,
        grid_path TEXT,
        delivery TEXT NOT NULL DEFAULT '{}',
        attempts INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX jobs_status_seq ON jobs(status, seq);
    CREATE INDEX jobs_user_status ON jobs(user_id, status);
    CREATE TABLE images (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT NOT NULL REFERENCES jobs(id),
        idx INTEGER NOT NULL,
        seed INTEGER NOT NULL,
        path TEXT NOT NULL,
        width INTEGER,
        height INTEGER,
        sha256 TEXT,
        watermark_payload TEXT,
        moderation TEXT NOT NULL DEFAULT '{}',
        UNIQUE (job_id, idx)
    );
    CREATE INDEX images_watermark ON images(watermark_payload);
    CREATE INDEX images_sha256 ON images(sha256);
    CREATE TABLE policies (
        guild_id INTEGER NOT NULL,
        channel_id INTEGER NOT NULL DEFAULT 0,
        data TEXT NOT NULL,
        updated_at REAL,
        updated_by INTEGER,
        PRIMARY KEY (guild_id, channel_id)
    );
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        guild_id INTEGER,
        channel_id INTEGER,
        user_id INTEGER,
        job_id TEXT,
        stage TEXT NOT NULL,
        action TEXT NOT NULL,
        categories TEXT NOT NULL DEFAULT '[]',
        evidence TEXT NOT NULL DEFAULT '[]',
        reason TEXT,
        image_sha256 TEXT
    );
    CREATE INDEX audit_guild_at ON audit_log(guild_id, at);
    CREATE INDEX audit_job ON audit_log(job_id);
    CREATE TABLE user_settings (
        user_id INTEGER PRIMARY KEY,
        data TEXT NOT NULL
    );
    CREATE TABLE guild_settings (
        guild_id INTEGER PRIMARY KEY,
        data TEXT NOT NULL
    );
    CREATE TABLE kv (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # v2: interactions acknowledged but not yet turned into a job (or refused): start-up
    # recovery finishes each one, so nothing acknowledged is lost to a crash.
    """
    CREATE TABLE accepted (
        id INTEGER PRIMARY KEY,
        created_at REAL NOT NULL,
        user_id INTEGER NOT NULL,
        guild_id INTEGER,
        channel_id INTEGER,
        ephemeral INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        payload TEXT NOT NULL
    );
    CREATE INDEX jobs_interaction ON jobs(json_extract(delivery, '$.interaction_id'));
    """,
    # v3: the GPU energy (NVML) charged to a job, its share of its batch by cost; NULL where
    # no counter exists ("not measured").
    """
    ALTER TABLE jobs ADD COLUMN energy_joules REAL;
    """,
    # v4: Zoom Out, Pan, Vary (Region) and /blend jobs. SQLite cannot change a CHECK in place,
    # so the table is rebuilt (its 12-step procedure; _migrate turns foreign keys off around it).
    """
    CREATE TABLE jobs_v4 (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL UNIQUE,
        guild_id INTEGER,
        channel_id INTEGER,
        user_id INTEGER NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN
            ('imagine', 'variation', 'upscale', 'reroll', 'zoom', 'pan', 'region', 'blend')),
        params TEXT NOT NULL,
        parent_job_id TEXT REFERENCES jobs(id),
        parent_image_index INTEGER,
        credited_user_ids TEXT NOT NULL DEFAULT '[]',
        status TEXT NOT NULL CHECK (status IN
            ('queued', 'running', 'done', 'failed', 'cancelled', 'blocked')),
        weight REAL NOT NULL DEFAULT 1.0,
        est_cost REAL NOT NULL,
        measured_seconds REAL,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        delivered_at REAL,
        error TEXT,
        result_dir TEXT,
        grid_path TEXT,
        delivery TEXT NOT NULL DEFAULT '{}',
        attempts INTEGER NOT NULL DEFAULT 0,
        energy_joules REAL
    );
    INSERT INTO jobs_v4 SELECT * FROM jobs;
    DROP TABLE jobs;
    ALTER TABLE jobs_v4 RENAME TO jobs;
    CREATE INDEX jobs_status_seq ON jobs(status, seq);
    CREATE INDEX jobs_user_status ON jobs(user_id, status);
    CREATE INDEX jobs_interaction ON jobs(json_extract(delivery, '$.interaction_id'));
    """,
    # v5: /describe's suggestions, so its buttons work after a restart (core/store_describe.py).
    """
    CREATE TABLE describes (
        id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL,
        guild_id INTEGER,
        channel_id INTEGER,
        suggestions TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(UserInputError):
    """The database file cannot be used; the message says why and what to do."""


class Store(JobRows, JournalRows, ModerationRows, DescribeRows):
    """An open job store. Create with ``await Store.open(path)``; close with ``await close()``."""

    @classmethod
    async def open(cls, path: str | Path, *, create: bool = True) -> Store:
        """Open (and migrate) the store; create it only when no file exists at ``path``."""
        path = Path(path)
        if path.exists():
            _check_sqlite_header(path)
        elif not create:
            raise StoreError(f"database {path} does not exist")
        else:
            try:
                make_private_dir(path.parent)
                # Owner-only from the first byte, whatever the umask: it holds prompts and live
                # interaction tokens. SQLite gives its -wal/-shm files the same mode.
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except OSError as exc:
                raise StoreError(
                    f"cannot create the data directory {path.parent}: {exc.strerror}"
                ) from None
        try:
            # Autocommit: a single-statement write is one trip to the connection thread instead
            # of two (statement, then commit). Each trip wakes the event loop and takes the GIL
            # from the generating thread; a job used to make 10 of them, now 6. Writes that
            # must be atomic together say BEGIN/COMMIT themselves.
            db = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from None
        db.row_factory = aiosqlite.Row
        store = cls(db, path)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA foreign_keys=ON")
            await db.execute("PRAGMA busy_timeout=5000")
            await store._migrate()
        except sqlite3.DatabaseError as exc:
            await db.close()
            raise StoreError(
                f"database {path} is corrupt or not an imagine-bot database ({exc}); "
                "move it aside and restart to create a new one, or restore a backup"
            ) from None
        except BaseException:
            await db.close()
            raise
        return store

    async def close(self) -> None:
        await self.db.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def schema_version(self) -> int:
        async with self.db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0])

    async def _migrate(self) -> None:
        version = await self.schema_version()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"database {self.path} has schema version {version}, newer than this "
                f"imagine-bot understands ({SCHEMA_VERSION}); upgrade imagine-bot"
            )
        if version == SCHEMA_VERSION:
            return
        # A migration may rebuild a table (dropping one that others reference): foreign keys
        # are off meanwhile, as SQLite's procedure asks (the pragma is a no-op in a transaction).
        await self.db.execute("PRAGMA foreign_keys=OFF")
        try:
            for target in range(version + 1, SCHEMA_VERSION + 1):
                # executescript commits first; the version bump rides in the same script.
                await self.db.executescript(
                    f"BEGIN;\n{MIGRATIONS[target - 1]}\nPRAGMA user_version={target};\nCOMMIT;"
                )
        finally:
            await self.db.execute("PRAGMA foreign_keys=ON")


def has_sqlite_header(path: Path) -> bool:
    """False when the file at ``path`` starts with something other than SQLite's header; an
    empty file passes (SQLite makes it a database). Raises ``OSError`` when it cannot be read."""
    with path.open("rb") as fh:
        header = fh.read(len(SQLITE_MAGIC))
    return not header or header == SQLITE_MAGIC


def _check_sqlite_header(path: Path) -> None:
    if path.is_dir():
        raise StoreError(f"database path {path} is a folder; point data_dir elsewhere")
    try:
        sqlite_file = has_sqlite_header(path)
    except OSError as exc:
        raise StoreError(f"cannot read database {path}: {exc.strerror}") from None
    if not sqlite_file:
        raise StoreError(
            f"database {path} is corrupt or not an SQLite file; it was left untouched. "
            "Move it aside and restart to create a new one, or restore a backup"
        )
