"""The job rows of ``core.store.Store``: the queue's durable half and each job's images.

Why apart from ``core/store.py``: the job lifecycle is the largest concern of the store; the
file keeps opening and migrating the database, and this class keeps the SQL of add, run,
finish, deliver and recover together.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.jobs import ImageRecord, Job, JobKind, JobStatus, Processed
from core.store_base import StoreBase


@dataclass
class Recovery:
    """What ``Store.recover()`` found at start-up."""

    requeued: int  # jobs that were running when the process died
    queued: list[Job]
    undelivered: list[Job]


class JobRows(StoreBase):
    """Job and image rows; part of ``Store``, never used alone."""

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
