"""/describe's rows in ``core.store.Store``: the suggestions its buttons run.

Why stored: a suggestion button (``ib:ds:<id>:<i>``) must work after a restart or days later,
and a custom_id has no room for a prompt. Only the suggestions are kept, never the image.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass

from core.store_base import StoreBase


@dataclass(frozen=True)
class Describe:
    id: str
    user_id: int
    guild_id: int | None
    channel_id: int | None
    suggestions: list[str | None]  # None: withheld by moderation (no button)
    created_at: float


class DescribeRows(StoreBase):
    """Add and read /describe rows; part of ``Store``."""

    async def add_describe(
        self,
        *,
        user_id: int,
        guild_id: int | None,
        channel_id: int | None,
        suggestions: list[str | None],
    ) -> Describe:
        row = Describe(
            id=secrets.token_hex(8),
            user_id=user_id,
            guild_id=guild_id,
            channel_id=channel_id,
            suggestions=list(suggestions),
            created_at=time.time(),
        )
        await self.db.execute(
            "INSERT INTO describes (id, user_id, guild_id, channel_id, suggestions, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (row.id, user_id, guild_id, channel_id, json.dumps(row.suggestions), row.created_at),
        )
        return row

    async def get_describe(self, describe_id: str) -> Describe | None:
        async with self.db.execute(
            "SELECT id, user_id, guild_id, channel_id, suggestions, created_at FROM describes "
            "WHERE id = ?",
            (describe_id,),
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        return Describe(
            id=row[0],
            user_id=row[1],
            guild_id=row[2],
            channel_id=row[3],
            suggestions=json.loads(row[4]),
            created_at=row[5],
        )

    async def forget_describes_before(self, cutoff: float) -> int:
        """Delete suggestions made before ``cutoff`` (retention); returns how many went."""
        cur = await self.db.execute("DELETE FROM describes WHERE created_at < ?", (cutoff,))
        return cur.rowcount
