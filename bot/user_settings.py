"""A user's defaults (``/settings``): aspect ratio, private replies, style preset.

Kept in the store's ``user_settings`` table as JSON, with a small in-memory copy because
``/imagine`` reads them before it may defer and must answer within Discord's 3 seconds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from generation.store import Store


@dataclass
class UserDefaults:
    aspect_ratio: str | None = None
    private: bool = False
    style: str | None = None

    @classmethod
    def from_json(cls, text: str | None) -> UserDefaults:
        try:
            data: dict[str, Any] = json.loads(text) if text else {}
        except ValueError:
            data = {}  # a damaged row means defaults, not a broken /imagine
        names = {f.name for f in fields(cls)}
        return (
            cls(**{k: v for k, v in data.items() if k in names})
            if isinstance(data, dict)
            else cls()
        )


class UserSettingsStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[int, UserDefaults] = {}
        self._complete = False  # True once every row is in the cache

    async def preload(self) -> None:
        """Read every row once at start, so ``/imagine`` can defer without touching the disk."""
        async with self.store.db.execute("SELECT user_id, data FROM user_settings") as cur:
            rows = await cur.fetchall()
        self._cache.update({int(r[0]): UserDefaults.from_json(r[1]) for r in rows})
        self._complete = True

    async def get(self, user_id: int) -> UserDefaults:
        cached = self._cache.get(user_id)
        if cached is not None:
            return cached
        if self._complete:
            return UserDefaults()
        async with self.store.db.execute(
            "SELECT data FROM user_settings WHERE user_id = ?", (user_id,)
        ) as cur:
            row = await cur.fetchone()
        value = UserDefaults.from_json(row[0] if row else None)
        self._cache[user_id] = value
        return value

    async def set(self, user_id: int, value: UserDefaults) -> None:
        await self.store.db.execute(
            "INSERT INTO user_settings (user_id, data) VALUES (?, ?) "
            "ON CONFLICT(user_id) DO UPDATE SET data = excluded.data",
            (user_id, json.dumps(asdict(value))),
        )
        await self.store.db.commit()
        self._cache[user_id] = value
