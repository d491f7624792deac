"""Per-user defaults and per-server bot settings: stored in SQLite, survive a reopen."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.settings_store import GuildSettingsStore, UserDefaults, UserSettingsStore
from core.errors import UserInputError
from core.store import Store


async def test_user_defaults_round_trip_and_preload(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "db.sqlite") as store:
        await UserSettingsStore(store).set(7, UserDefaults(aspect_ratio="16:9", private=True))
        await store.db.execute("INSERT INTO user_settings VALUES (8, 'not json')")
        await store.db.commit()
    async with await Store.open(tmp_path / "db.sqlite") as store:
        fresh = UserSettingsStore(store)
        await fresh.preload()
        assert await fresh.get(7) == UserDefaults(aspect_ratio="16:9", private=True)
        assert await fresh.get(8) == UserDefaults(), "a damaged row means defaults"
        assert await fresh.get(9) == UserDefaults()


async def test_guild_settings_weights_caps_and_validation(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "db.sqlite") as store:
        guilds = GuildSettingsStore(store)
        await guilds.update(1, role_weights={"10": 2.0, "11": 0.5}, user_caps={"5": 0})
        await guilds.update(1, banned_user_ids=[6])
        with pytest.raises(UserInputError):
            await guilds.update(1, user_caps={"5": "many"})
    async with await Store.open(tmp_path / "db.sqlite") as store:
        settings = await GuildSettingsStore(store).get(1)
        assert settings.weight_for([11, 10]) == 2.0
        assert settings.weight_for([]) == 1.0
        assert settings.cap_for(5) == 0 and settings.cap_for(4) is None
        assert settings.banned_user_ids == [6]
        assert (await GuildSettingsStore(store).get(None)).log_channel_id is None
