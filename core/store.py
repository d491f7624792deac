"""The durable store: one SQLite file (WAL) holding jobs, images, policies and the audit log.

Why one file: a moderator's question "who made this?" joins images, jobs and moderation
decisions, and a restart must see exactly what was accepted. Schema changes are numbered
migrations applied at start-up; a file from a newer version is refused rather than guessed at.

``Store`` has the job lifecycle (add, run, finish, deliver, recover), results and images, the
accepted-interaction journal, the ``kv`` table, and the rows moderation needs (policies, the
audit log, provenance look-ups; their rules stay in ``moderation/``, which never touches
``store.db``). The bot's settings tables (``bot/settings_store.py``) use ``store.db`` directly.
The doctor's read-only checks of the file are in ``generation/store_checks.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from core.errors import UserInputError
from core.jobs import ImageRecord, Job, JobKind, JobStatus, Processed
from core.private_files import make_private_dir

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
]

SCHEMA_VERSION = len(MIGRATIONS)


@dataclass
class Recovery:
    """What ``Store.recover()`` found at start-up."""

    requeued: int  # jobs that were running when the process died
    queued: list[Job]
    undelivered: list[Job]


@dataclass
class AcceptedInteraction:
    """An interaction the bot acknowledged: who, where, and Discord's payload to replay it."""

    id: int
    created_at: float
    user_id: int
    guild_id: int | None
    channel_id: int | None
    ephemeral: bool
    payload: dict[str, Any]
    attempts: int = 0

    @classmethod
    def from_row(cls, row: Any) -> AcceptedInteraction:
        return cls(
            id=row["id"], created_at=row["created_at"], user_id=row["user_id"],
            guild_id=row["guild_id"], channel_id=row["channel_id"],
            ephemeral=bool(row["ephemeral"]), payload=json.loads(row["payload"]),
            attempts=row["attempts"],
        )


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

    # --- jobs (the queue's durable half; the scheduler keeps the in-memory order) ---------------
    #
    # Every write commits before returning: a job the user was told about survives a crash.
    # Multi-statement writes are ordered so that any committed prefix is a safe state to restart
    # from (another coroutine's commit on the shared connection may land between statements).

    async def add_job(self, job: Job, *, now: float | None = None) -> Job:
        """Insert a queued job and commit; returns it with ``seq`` and ``created_at`` filled."""
        job.created_at = now if now is not None else time.time()
        job.status = JobStatus.QUEUED
        interaction_id = job.delivery.get("interaction_id")
        async with self._job_lock:
            seq = await self._insert_job(job)  # autocommit: committed once this returns
            if interaction_id is not None:
                # Its accepted interaction is now this job. A crash between the two leaves
                # both; recovery then finds the job by its interaction id and drops the row.
                await self.db.execute("DELETE FROM accepted WHERE id = ?", (int(interaction_id),))
        job.seq = seq
        return job

    async def _insert_job(self, job: Job) -> int:
        rows = await self.db.execute_fetchall(
                """INSERT INTO jobs (id, seq, guild_id, channel_id, user_id, kind, params,
                       parent_job_id, parent_image_index, credited_user_ids, status, weight,
                       est_cost, created_at, delivery)
                   VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs), ?, ?, ?, ?, ?, ?, ?, ?,
                       'queued', ?, ?, ?, ?)
                   RETURNING seq""",
                (
                    job.id, job.guild_id, job.channel_id, job.user_id, JobKind(job.kind).value,
                    json.dumps(job.params), job.parent_job_id, job.parent_image_index,
                    json.dumps(job.credited_user_ids), job.weight, job.est_cost, job.created_at,
                    json.dumps(job.delivery),
                ),
        )
        return rows[0][0]

    async def get_job(self, job_id: str) -> Job | None:
        # execute_fetchall: one trip to the connection thread instead of three (execute, fetch,
        # close); each trip wakes the event loop and takes the GIL from the generating thread.
        rows = await self.db.execute_fetchall("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return Job.from_row(rows[0]) if rows else None

    async def queued_jobs(self) -> list[Job]:
        """All queued jobs in arrival order (the scheduler re-derives the fair order)."""
        return await self._jobs("WHERE status = 'queued' ORDER BY seq")

    async def jobs_for_user(
        self, user_id: int, *, statuses: list[JobStatus] | None = None, limit: int = 25
    ) -> list[Job]:
        """A user's jobs, newest first (for "my jobs" and cap checks)."""
        where, args = "WHERE user_id = ?", [user_id]
        if statuses:
            where += f" AND status IN ({','.join('?' * len(statuses))})"
            args += [JobStatus(s).value for s in statuses]
        return await self._jobs(f"{where} ORDER BY seq DESC LIMIT ?", (*args, limit))

    async def mark_running(self, job_id: str, *, now: float | None = None) -> bool:
        """Queued -> running; False if the job is no longer queued (cancelled meanwhile)."""
        return await self._update(
            "UPDATE jobs SET status = 'running', started_at = ?, attempts = attempts + 1 "
            "WHERE id = ? AND status = 'queued'",
            (now if now is not None else time.time(), job_id),
        )

    async def mark_done(
        self,
        job_id: str,
        processed: Processed,
        *,
        measured_seconds: float | None = None,
        energy_joules: float | None = None,
        now: float | None = None,
    ) -> list[ImageRecord]:
        """Record the saved images, then mark the job done (in that order, see above).

        Returns the image rows. A job that is no longer running (cancelled while it was being
        post-processed) keeps its status and its images are not recorded.

        Two autocommitted statements rather than one transaction (fewer trips to the connection
        thread): a crash between them leaves images on a job that is still ``running``, which a
        restart re-runs, and ``INSERT OR REPLACE`` then overwrites those rows.
        """
        now = now if now is not None else time.time()
        async with self._job_lock:
            if processed.images:
                # One statement for all images (one commit, one fsync), and only while the job
                # is running: a cancelled job's images are not recorded.
                rows = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(processed.images))
                await self.db.execute(
                    f"""INSERT OR REPLACE INTO images (job_id, idx, seed, path, width, height,
                            sha256, watermark_payload, moderation)
                        SELECT * FROM (VALUES {rows})
                        WHERE EXISTS (SELECT 1 FROM jobs WHERE id = ? AND status = 'running')""",
                    [
                        *(
                            value
                            for img in processed.images
                            for value in (
                                job_id, img.index, img.seed, str(img.path), img.width,
                                img.height, img.sha256, img.watermark_payload,
                                json.dumps(img.moderation),
                            )
                        ),
                        job_id,
                    ],
                )
            result_dir = str(Path(processed.images[0].path).parent) if processed.images else None
            cur = await self.db.execute(
                """UPDATE jobs SET status = 'done', finished_at = ?, measured_seconds = ?,
                       energy_joules = ?, result_dir = ?, grid_path = ?, error = NULL
                   WHERE id = ? AND status = 'running'""",
                (
                    now, measured_seconds, energy_joules, result_dir,
                    str(processed.grid_path) if processed.grid_path else None, job_id,
                ),
            )
            if cur.rowcount == 0:
                # Cancelled between the two statements: drop what the first one wrote.
                await self.db.execute("DELETE FROM images WHERE job_id = ?", (job_id,))
                return []
        return await self.images_for_job(job_id)

    async def mark_failed(
        self,
        job_id: str,
        reason: str,
        *,
        status: JobStatus = JobStatus.FAILED,
        now: float | None = None,
    ) -> bool:
        """Queued/running -> failed, blocked or cancelled, keeping the reason for the user."""
        status = JobStatus(status)
        if not status.finished or status == JobStatus.DONE:
            raise ValueError(f"mark_failed cannot set status {status.value}")
        return await self._update(
            "UPDATE jobs SET status = ?, error = ?, finished_at = ? "
            "WHERE id = ? AND status IN ('queued', 'running')",
            (status.value, reason, now if now is not None else time.time(), job_id),
        )

    async def cancel(self, job_id: str, *, now: float | None = None) -> bool:
        """Cancel a queued job; False if it is not queued (running ones stop via the worker)."""
        return await self._update(
            "UPDATE jobs SET status = 'cancelled', error = 'cancelled', finished_at = ? "
            "WHERE id = ? AND status = 'queued'",
            (now if now is not None else time.time(), job_id),
        )

    async def requeue(self, job_id: str) -> bool:
        """Running -> queued (graceful stop interrupted it); it keeps its place by ``seq``."""
        return await self._update(
            "UPDATE jobs SET status = 'queued', started_at = NULL "
            "WHERE id = ? AND status = 'running'",
            (job_id,),
        )

    async def mark_delivered(self, job_id: str, *, now: float | None = None) -> bool:
        """Claim delivery of a finished job: True for exactly one caller, ever."""
        return await self._update(
            "UPDATE jobs SET delivered_at = ? WHERE id = ? AND delivered_at IS NULL "
            "AND status IN ('done', 'failed', 'blocked', 'cancelled')",
            (now if now is not None else time.time(), job_id),
        )

    async def update_delivery(self, job_id: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Merge ``patch`` into the job's delivery JSON (RFC 7396: a None value deletes a key)."""
        await self._update(
            "UPDATE jobs SET delivery = json_patch(delivery, ?) WHERE id = ?",
            (json.dumps(patch), job_id),
        )
        job = await self.get_job(job_id)
        return job.delivery if job else {}

    async def recover(self) -> Recovery:
        """At start-up: jobs left running by a crash go back to the queue.

        Returns what the worker must act on: the queued jobs (in arrival order) and finished
        jobs whose result never reached the user.
        """
        async with self._job_lock:
            cur = await self.db.execute(
                "UPDATE jobs SET status = 'queued', started_at = NULL WHERE status = 'running'"
            )
            requeued = cur.rowcount
        return Recovery(
            requeued=requeued,
            queued=await self.queued_jobs(),
            undelivered=await self.undelivered_jobs(),
        )

    async def undelivered_jobs(self) -> list[Job]:
        """Done, failed or blocked jobs nobody has delivered yet, oldest first."""
        return await self._jobs(
            "WHERE delivered_at IS NULL AND status IN ('done', 'failed', 'blocked') ORDER BY seq"
        )

    async def images_for_job(self, job_id: str) -> list[ImageRecord]:
        rows = await self.db.execute_fetchall(
            "SELECT * FROM images WHERE job_id = ? ORDER BY idx", (job_id,)
        )
        return [ImageRecord.from_row(r) for r in rows]

    async def get_image(self, job_id: str, index: int) -> ImageRecord | None:
        async with self.db.execute(
            "SELECT * FROM images WHERE job_id = ? AND idx = ?", (job_id, index)
        ) as cur:
            row = await cur.fetchone()
        return ImageRecord.from_row(row) if row else None

    # --- retention (see core/retention.py) ------------------------------------------------

    async def unfinished_job_ids(self, job_ids: list[str]) -> set[str]:
        """Which of these jobs are still queued or running (their files are still needed)."""
        found: set[str] = set()
        for start in range(0, len(job_ids), 500):
            chunk = job_ids[start : start + 500]
            rows = await self.db.execute_fetchall(
                f"SELECT id FROM jobs WHERE id IN ({','.join('?' * len(chunk))}) "
                "AND status IN ('queued', 'running')",
                chunk,
            )
            found.update(r[0] for r in rows)
        return found

    async def results_finished_before(
        self, cutoff: float, *, limit: int = 1000
    ) -> list[tuple[str, str]]:
        """(job id, result folder) of finished, delivered jobs older than ``cutoff``."""
        rows = await self.db.execute_fetchall(
            "SELECT id, result_dir FROM jobs WHERE result_dir IS NOT NULL "
            "AND finished_at < ? AND delivered_at IS NOT NULL ORDER BY finished_at LIMIT ?",
            (cutoff, limit),
        )
        return [(r[0], r[1]) for r in rows]

    async def forget_results(self, job_id: str, why: str) -> None:
        """The job's files are gone: it keeps its row and says why it has no images."""
        await self._update(
            "UPDATE jobs SET result_dir = NULL, grid_path = NULL, "
            "delivery = json_patch(delivery, ?) WHERE id = ?",
            (json.dumps({"files_expired": why}), job_id),
        )

    # --- accepted interactions (see bot/accept.py) ----------------------------------------------

    async def record_accepted(self, rows: list[AcceptedInteraction]) -> None:
        """Commit acknowledged interactions, many in one transaction (a burst is one fsync)."""
        async with self._job_lock:
            await self.db.execute("BEGIN")
            try:
                await self.db.executemany(
                    "INSERT OR IGNORE INTO accepted (id, created_at, user_id, guild_id, "
                    "channel_id, ephemeral, payload) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (r.id, r.created_at, r.user_id, r.guild_id, r.channel_id,
                         int(r.ephemeral), json.dumps(r.payload))
                        for r in rows
                    ],
                )
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise
            await self.db.execute("COMMIT")

    async def forget_accepted(self, interaction_id: int) -> None:
        """The interaction was answered (refused, or its job exists): nothing left to recover."""
        await self._update("DELETE FROM accepted WHERE id = ?", (interaction_id,))

    async def accepted_interactions(self) -> list[AcceptedInteraction]:
        """Interactions acknowledged but never finished, oldest first; each call counts an
        attempt (so one that crashes the bot every time is given up on, see bot/accept.py)."""
        async with self._job_lock:
            await self.db.execute("UPDATE accepted SET attempts = attempts + 1")
        rows = await self.db.execute_fetchall("SELECT * FROM accepted ORDER BY created_at, id")
        return [AcceptedInteraction.from_row(r) for r in rows]

    async def job_for_interaction(self, interaction_id: int) -> Job | None:
        rows = await self.db.execute_fetchall(
            "SELECT * FROM jobs WHERE json_extract(delivery, '$.interaction_id') = ?",
            (interaction_id,),
        )
        return Job.from_row(rows[0]) if rows else None

    async def get_value(self, key: str) -> str | None:
        """A small persistent value from ``kv`` (e.g. the measured cost model)."""
        async with self.db.execute("SELECT value FROM kv WHERE key = ?", (key,)) as cur:
            row = await cur.fetchone()
        return row[0] if row else None

    async def set_value(self, key: str, value: str) -> None:
        await self._update(
            "INSERT INTO kv (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # --- moderation: policies (see moderation/policy.py) ---------------------------------------
    #
    # Single statements on the autocommit connection, like the moderation code's own writes were.

    async def policy_data(self, guild_id: int, channel_id: int) -> str | None:
        """The stored JSON of a guild's (channel 0) or a channel's policy row, or None."""
        async with self.db.execute(
            "SELECT data FROM policies WHERE guild_id = ? AND channel_id = ?", (guild_id, channel_id)
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else row[0]

    async def put_policy_data(
        self, guild_id: int, channel_id: int, data: str, by_user: int | None
    ) -> None:
        await self.db.execute(
            "INSERT INTO policies (guild_id, channel_id, data, updated_at, updated_by) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (guild_id, channel_id) DO UPDATE SET "
            "data = excluded.data, updated_at = excluded.updated_at, updated_by = excluded.updated_by",
            (guild_id, channel_id, data, time.time(), by_user),
        )

    # --- moderation: audit log (see moderation/audit.py) ----------------------------------------

    async def add_audit_entry(
        self,
        *,
        guild_id: int | None,
        channel_id: int | None,
        user_id: int | None,
        job_id: str | None,
        stage: str,
        action: str,
        categories: list[str],
        evidence: list[str],
        reason: str,
        image_sha256: str | None = None,
    ) -> int | None:
        """Append one moderation decision; returns its id."""
        cur = await self.db.execute(
            "INSERT INTO audit_log (at, guild_id, channel_id, user_id, job_id, stage, action, "
            "categories, evidence, reason, image_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                time.time(), guild_id, channel_id, user_id, job_id, stage, action,
                json.dumps(categories), json.dumps(evidence), reason, image_sha256,
            ),
        )
        return cur.lastrowid

    async def audit_rows(
        self,
        guild_id: int | None,
        *,
        limit: int,
        user_id: int | None = None,
        job_id: str | None = None,
    ) -> list[Any]:
        """A guild's audit entries (None: direct messages), newest first."""
        where = ["guild_id IS ?"]
        args: list[Any] = [guild_id]
        if user_id is not None:
            where.append("user_id = ?")
            args.append(user_id)
        if job_id is not None:
            where.append("job_id = ?")
            args.append(job_id)
        sql = (
            "SELECT id, at, guild_id, channel_id, user_id, job_id, stage, action, categories, "
            f"evidence, reason, image_sha256 FROM audit_log WHERE {' AND '.join(where)} "
            "ORDER BY at DESC, id DESC LIMIT ?"
        )
        return list(await self.db.execute_fetchall(sql, (*args, limit)))

    async def audit_rows_for_job(self, job_id: str) -> list[Any]:
        """Every audit entry of one job, oldest first."""
        return list(
            await self.db.execute_fetchall(
                "SELECT * FROM audit_log WHERE job_id = ? ORDER BY at", (job_id,)
            )
        )

    # --- provenance look-ups (see moderation/provenance.py): raw rows, every column -----------

    async def job_row(self, job_id: str) -> Any | None:
        rows = await self.db.execute_fetchall("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return rows[0] if rows else None

    async def image_row(self, job_id: str, index: int) -> Any | None:
        rows = await self.db.execute_fetchall(
            "SELECT * FROM images WHERE job_id = ? AND idx = ?", (job_id, index)
        )
        return rows[0] if rows else None

    async def image_rows_with_sha256(self, sha256: str) -> list[Any]:
        return list(
            await self.db.execute_fetchall("SELECT * FROM images WHERE sha256 = ?", (sha256,))
        )

    async def image_rows_with_watermark(self, payload_hex: str) -> list[Any]:
        """Images whose stored watermark payload is ``payload_hex``, newest first."""
        return list(
            await self.db.execute_fetchall(
                "SELECT * FROM images WHERE watermark_payload = ? ORDER BY id DESC", (payload_hex,)
            )
        )

    async def job_ids_with_seq(self, modulus: int, low: int, *, limit: int = 20) -> list[str]:
        """Ids of the jobs whose ``seq % modulus == low``, newest first."""
        rows = await self.db.execute_fetchall(
            "SELECT id FROM jobs WHERE seq % ? = ? ORDER BY seq DESC LIMIT ?", (modulus, low, limit)
        )
        return [r["id"] for r in rows]

    async def child_job_rows(self, job_id: str) -> list[Any]:
        """(id, kind, user_id, status) of the jobs made from ``job_id``."""
        return list(
            await self.db.execute_fetchall(
                "SELECT id, kind, user_id, status FROM jobs WHERE parent_job_id = ?", (job_id,)
            )
        )

    @property
    def _job_lock(self) -> asyncio.Lock:
        # Created lazily so the core constructor stays as it is.
        lock = self.__dict__.get("_lock")
        if lock is None:
            lock = self.__dict__["_lock"] = asyncio.Lock()
        return lock

    async def _update(self, sql: str, args: tuple[Any, ...]) -> bool:
        async with self._job_lock:
            cur = await self.db.execute(sql, args)  # autocommit: one trip
        return cur.rowcount > 0

    async def _jobs(self, clause: str, args: tuple[Any, ...] | list[Any] = ()) -> list[Job]:
        rows = await self.db.execute_fetchall(f"SELECT * FROM jobs {clause}", tuple(args))
        return [Job.from_row(r) for r in rows]

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
