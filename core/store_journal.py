"""The journal rows of ``core.store.Store``: accepted interactions, retention and ``kv``.

Why apart: these rows are what start-up recovery and the retention sweep read besides the
queue; keeping them here keeps each part of the store small enough to read at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from core.jobs import Job
from core.store_base import StoreBase


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


class JournalRows(StoreBase):
    """Retention look-ups, the accepted-interaction journal and ``kv``; part of ``Store``."""

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

    async def permutations_queued(self, interaction_id: int) -> set[int]:
        """Which combinations of a permutation prompt already have a job (a replay skips them);
        the last one's job carries ``interaction_id`` and ends the replays itself."""
        rows = await self.db.execute_fetchall(
            "SELECT json_extract(delivery, '$.permutation') FROM jobs "
            "WHERE json_extract(delivery, '$.permutation_of') = ?",
            (interaction_id,),
        )
        return {int(r[0]) for r in rows if r[0] is not None}

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
