"""Per-server bot settings that are not moderation rules: the moderation-log channel, role
weights in the fair share, per-user caps and users banned from the bot.

Moderation rules live in ``moderation/policy.py``; these are stored next to them in the store's
``guild_settings`` table so that ``/policy`` edits both from one place.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from generation.errors import UserInputError

if TYPE_CHECKING:
    from generation.store import Store


class GuildSettings(BaseModel):
    model_config = ConfigDict(extra="ignore")

    log_channel_id: int | None = None
    role_weights: dict[str, float] = Field(default_factory=dict)  # role id (str) -> weight
    user_caps: dict[str, int] = Field(default_factory=dict)  # user id (str) -> max queued
    banned_user_ids: list[int] = Field(default_factory=list)

    def weight_for(self, role_ids: list[int]) -> float:
        """A member's weight: the largest of their roles' weights, 1.0 without any."""
        weights = [self.role_weights[str(r)] for r in role_ids if str(r) in self.role_weights]
        return max(weights, default=1.0)

    def cap_for(self, user_id: int) -> int | None:
        return self.user_caps.get(str(user_id))


class GuildSettingsStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[int, GuildSettings] = {}

    async def get(self, guild_id: int | None) -> GuildSettings:
        if guild_id is None:
            return GuildSettings()
        cached = self._cache.get(guild_id)
        if cached is not None:
            return cached
        async with self.store.db.execute(
            "SELECT data FROM guild_settings WHERE guild_id = ?", (guild_id,)
        ) as cur:
            row = await cur.fetchone()
        try:
            value = GuildSettings.model_validate(json.loads(row[0]) if row else {})
        except (ValidationError, json.JSONDecodeError):
            value = GuildSettings()
        self._cache[guild_id] = value
        return value

    async def update(self, guild_id: int, **changes: Any) -> GuildSettings:
        current = await self.get(guild_id)
        try:
            value = GuildSettings.model_validate({**current.model_dump(), **changes})
        except ValidationError as exc:
            raise UserInputError(f"invalid server setting: {exc.errors()[0]['msg']}") from None
        await self.store.db.execute(
            "INSERT INTO guild_settings (guild_id, data) VALUES (?, ?) "
            "ON CONFLICT(guild_id) DO UPDATE SET data = excluded.data",
            (guild_id, value.model_dump_json()),
        )
        await self.store.db.commit()
        self._cache[guild_id] = value
        return value
