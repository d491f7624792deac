"""The access rules every job action shares (``bot/access.py``), case by case. The end-to-end
tests (two servers in the emulator) show them applied; these pin each rule on its own."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import discord
import pytest

from bot.access import in_scope, is_moderator, require_access
from core.errors import UserInputError
from core.jobs import Job, JobKind

A, B = 111, 222
ALICE, BOB = 1, 2


@dataclass
class Channel:
    nsfw: bool = False

    def is_nsfw(self) -> bool:
        return self.nsfw


@dataclass
class Actor:
    """What the checks read of an interaction (or a reaction's stand-in)."""

    user_id: int
    guild_id: int | None
    channel: Any = field(default_factory=Channel)
    permissions: discord.Permissions = field(default_factory=discord.Permissions.none)

    @property
    def user(self) -> discord.Object:
        return discord.Object(self.user_id)


def job(**delivery: Any) -> Job:
    return Job(id="j1", user_id=ALICE, kind=JobKind.IMAGINE, params={}, est_cost=1.0,
               guild_id=A, channel_id=5, delivery=delivery)


def refusal(actor: Actor, target: Job) -> str:
    with pytest.raises(UserInputError) as exc:
        require_access(target, actor)
    return str(exc.value)


def test_a_server_sees_only_its_own_jobs() -> None:
    require_access(job(), Actor(BOB, A))
    assert "another server" in refusal(Actor(BOB, B), job())
    mod_of_b = Actor(BOB, B, permissions=discord.Permissions(manage_guild=True))
    assert "another server" in refusal(mod_of_b, job())


def test_in_a_dm_only_ones_own_jobs() -> None:
    require_access(job(), Actor(ALICE, None))
    assert "only your own" in refusal(Actor(BOB, None), job())
    assert in_scope(job(), guild_id=None, user_id=ALICE)
    assert not in_scope(job(), guild_id=None, user_id=BOB)


def test_private_and_age_restricted_jobs() -> None:
    assert "private" in refusal(Actor(BOB, A), job(private=True))
    require_access(job(private=True), Actor(ALICE, A))
    adult = job(nsfw_channel=True)
    assert "age-restricted" in refusal(Actor(ALICE, A), adult)
    assert "age-restricted" in refusal(Actor(ALICE, None), adult), "not in a DM either"
    require_access(adult, Actor(BOB, A, channel=Channel(nsfw=True)))


def test_one_definition_of_a_moderator() -> None:
    assert is_moderator(Actor(BOB, A, permissions=discord.Permissions(manage_guild=True)))
    assert is_moderator(Actor(BOB, A, permissions=discord.Permissions(administrator=True)))
    assert not is_moderator(Actor(BOB, A, permissions=discord.Permissions(manage_messages=True)))
    assert not is_moderator(Actor(BOB, None, permissions=discord.Permissions.all())), "no DM mods"
