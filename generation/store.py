"""The durable store: one SQLite file (WAL) holding jobs, images, policies and the audit log.

Why one file: a moderator's question "who made this?" joins images, jobs and moderation
decisions, and a restart must see exactly what was accepted. Schema changes are numbered
migrations applied at start-up; a file from a newer version is refused rather than guessed at.

Only the core (open, migrate, close) lives here. Job-queue methods are added on ``Store`` by the
queue work; policy and audit helpers live in ``moderation/`` and use ``store.db``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiosqlite

from generation.errors import UserInputError

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
        delivery TEXT NOT NULL DEFAULT '{}'
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
]

SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(UserInputError):
    """The database file cannot be used; the message says why and what to do."""


class Store:
    """An open job store. Create with ``await Store.open(path)``; close with ``await close()``."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self.db = db
        self.path = path

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
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the data directory {path.parent}: {exc.strerror}"
                ) from None
        try:
            db = await aiosqlite.connect(path)
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
        for target in range(version + 1, SCHEMA_VERSION + 1):
            # executescript commits first; the version bump rides in the same script.
            await self.db.executescript(
                f"BEGIN;\n{MIGRATIONS[target - 1]}\nPRAGMA user_version={target};\nCOMMIT;"
            )


def _check_sqlite_header(path: Path) -> None:
    if path.is_dir():
        raise StoreError(f"database path {path} is a folder; point data_dir elsewhere")
    try:
        with path.open("rb") as fh:
            header = fh.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise StoreError(f"cannot read database {path}: {exc.strerror}") from None
    if header and header != SQLITE_MAGIC:
        raise StoreError(
            f"database {path} is corrupt or not an SQLite file; it was left untouched. "
            "Move it aside and restart to create a new one, or restore a backup"
        )
