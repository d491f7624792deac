"""The rows moderation needs from ``core.store.Store``: policies, the audit log, provenance.

Why here and not in ``moderation/``: every SQL statement stays in ``core/`` next to the
migrations that define its tables; the rules that use these rows stay in ``moderation/``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from core.store_base import StoreBase


class ModerationRows(StoreBase):
    """Policy, audit-log and provenance rows; part of ``Store``."""

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
