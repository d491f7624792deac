"""Settings people change with commands, one JSON row per user or server, with a memory copy.

``/imagine`` reads a user's defaults before it may defer and must answer within Discord's
3 seconds, so reads come from the copy (every user row is loaded at start); the server settings
(moderation-log channel, role weights in the fair share, per-user caps, users banned from the
bot) are read on first use. Moderation rules live in ``moderation/policy.py``; these are stored
next to them so that ``/policy`` edits both from one place. A damaged row reads as defaults
rather than breaking the commands that need it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import UserInputError

if TYPE_CHECKING:
    from core.store import Store


class UserDefaults(BaseModel):
    """A user's ``/settings``: defaults for their ``/imagine``."""

    model_config = ConfigDict(extra="ignore")

    aspect_ratio: str | None = None
    private: bool = False
    style: str | None = None
    # Remix mode (Midjourney's): Zoom Out and Pan open a form to edit the prompt first.
    remix: bool = False


class GuildSettings(BaseModel):
    """A server's bot settings that are not moderation rules."""

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


M = TypeVar("M", bound=BaseModel)


class SettingsStore(Generic[M]):
    """Rows ``(key, data)`` of one table, each ``data`` a JSON ``model``."""

    def __init__(self, store: Store, table: str, key: str, model: type[M], *, what: str) -> None:
        self.store = store
        self.model = model
        self.what = what  # for error messages: "server setting"
        self._select_all = f"SELECT {key}, data FROM {table}"
        self._select = f"SELECT data FROM {table} WHERE {key} = ?"
        self._upsert = (
            f"INSERT INTO {table} ({key}, data) VALUES (?, ?) "
            f"ON CONFLICT({key}) DO UPDATE SET data = excluded.data"
        )
        self._cache: dict[int, M] = {}
        self._complete = False  # True once every row is in the cache

    def _parse(self, text: str | None) -> M:
        try:
            return self.model.model_validate(json.loads(text) if text else {})
        except (ValidationError, ValueError):
            return self.model()

    async def preload(self) -> None:
        """Read every row once, so later reads never touch the disk."""
        async with self.store.db.execute(self._select_all) as cur:
            rows = await cur.fetchall()
        self._cache.update({int(r[0]): self._parse(r[1]) for r in rows})
        self._complete = True

    async def get(self, key: int | None) -> M:
        """The settings for ``key``; defaults for no key (a DM has no server)."""
        if key is None:
            return self.model()
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if self._complete:
            return self.model()
        async with self.store.db.execute(self._select, (key,)) as cur:
            row = await cur.fetchone()
        value = self._parse(row[0] if row else None)
        self._cache[key] = value
        return value

    async def set(self, key: int, value: M) -> None:
        await self.store.db.execute(self._upsert, (key, value.model_dump_json()))
        await self.store.db.commit()
        self._cache[key] = value

    async def update(self, key: int, **changes: Any) -> M:
        """Change some fields; a ``UserInputError`` names the first invalid value."""
        current = await self.get(key)
        try:
            value = self.model.model_validate({**current.model_dump(), **changes})
        except ValidationError as exc:
            raise UserInputError(f"invalid {self.what}: {exc.errors()[0]['msg']}") from None
        await self.set(key, value)
        return value


class UserSettingsStore(SettingsStore[UserDefaults]):
    def __init__(self, store: Store) -> None:
        super().__init__(store, "user_settings", "user_id", UserDefaults, what="setting")


class GuildSettingsStore(SettingsStore[GuildSettings]):
    def __init__(self, store: Store) -> None:
        super().__init__(store, "guild_settings", "guild_id", GuildSettings, what="server setting")
