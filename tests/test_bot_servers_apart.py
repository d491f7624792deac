"""One bot, many servers, kept apart: a member or moderator of server B can neither show, vary,
upscale, reroll, remix, delete nor look up server A's jobs, and gets a clear refusal while nothing
of A's is sent; results from an age-restricted channel stay in one; a private prompt reaches its
author only; a server's policy edit keeps the instance's own settings. Real bot, emulator, tiny
model, SQLite; B's copy of A's buttons stands for one made by ``/show`` before these checks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.views import result_view
from generation.admission import RateLimiter
from moderation.policy import Policy, load_policy
from playground.emulator.state import MANAGE_GUILD
from tests.test_bot_e2e import Harness, _ephemeral_reply, _harness


@pytest.fixture
async def two(discord_emulator, tiny_engine, tmp_path: Path) -> AsyncIterator[Harness]:
    emu = discord_emulator
    world = emu.world
    other = world.add_guild("Other Server")
    emu.other = other
    emu.other_general = world.add_channel(other, "b-general")
    emu.carl = world.add_user("carl", guild=other)
    emu.bmod = world.add_user(
        "bmod", guild=other, roles=[world.add_role(other, "B Moderator", MANAGE_GUILD)]
    )
    async with _harness(emu, tiny_engine, tmp_path, real_postprocess=False) as h:
        yield h


async def _job_count(h: Harness) -> int:
    async with h.store.db.execute("SELECT COUNT(*) FROM jobs") as cur:
        return (await cur.fetchone())[0]


def _nothing_of(emu: Any, job_id: str, channel: Any, *, but: tuple[int, ...] = ()) -> None:
    """No image and no mention of the job reached ``channel``, except the refusals, which only
    the caller sees (ephemeral), and the messages in ``but``."""
    leaked = [
        m
        for m in emu.messages_in(channel, include_deleted=True)
        if not m.ephemeral and m.id not in but and (m.attachments or job_id in (m.content or ""))
    ]
    assert not leaked, leaked


async def test_another_server_cannot_show_use_or_look_up_a_job(two: Harness) -> None:
    h, emu = two, two.emu
    iid = await h.imagine("a lighthouse at dusk --count 1 --steps 2", user=emu.alice)
    result = await h.result_of(iid)
    job = await h.delivered(iid)
    png = result.attachments[0].data

    for who in (emu.carl, emu.bmod):
        shown = await emu.send_slash("show", {"job": job.id}, user=who, channel=emu.other_general)
        assert "another server" in (await _ephemeral_reply(emu, shown)).content

    # A copy of A's buttons in B (as /show made them before): every button is refused there.
    copy = await h.bot.get_partial_messageable(emu.other_general.id, guild_id=emu.other.id).send(
        "an old copy", view=result_view(job.id, 1, kind="imagine")
    )
    pressed = [
        (f"ib:u:{job.id}:0", emu.carl),
        (f"ib:v:{job.id}:0:s", emu.carl),
        (f"ib:r:{job.id}", emu.bmod),
        (f"ib:m:{job.id}", emu.carl),
        (f"ib:d:{job.id}", emu.bmod),
    ]
    for custom_id, who in pressed:
        click = await emu.click(copy.id, custom_id, user=who)
        reply = (await _ephemeral_reply(emu, click)).content
        assert "another server" in reply, (custom_id, reply)
        assert emu.interaction(click).modal is None, "no remix modal showing A's prompt"
    assert await _job_count(h) == 1, "nothing was queued for B"
    assert not (await h.store.get_job(job.id)).delivery.get("deleted")

    for who in (emu.carl, emu.bmod):
        ask = await emu.send_slash(
            "provenance",
            {"image": emu.upload("found.png", png)},
            user=who,
            channel=emu.other_general,
        )
        answer = (await _ephemeral_reply(emu, ask, timeout=60)).content
        assert "another server" in answer
        for secret in (job.id, str(emu.alice.id), "lighthouse", str(emu.guild.id)):
            assert secret not in answer, (secret, answer)
    _nothing_of(emu, job.id, emu.other_general, but=(copy.id,))

    # In its own server, the same buttons and /show still work.
    again = await emu.send_slash("show", {"job": job.id}, user=emu.bob)
    await h.result_of(again)


async def test_private_prompts_and_age_restricted_results_stay_where_they_belong(
    two: Harness,
) -> None:
    h, emu = two, two.emu
    private = await h.imagine("a secret garden --count 1 --steps 2", user=emu.alice, private=True)
    secret = await h.result_of(private)
    job = await h.delivered(private)
    png = secret.attachments[0].data
    answers = {}
    for who in (emu.alice, emu.moderator):
        ask = await emu.send_slash("provenance", {"image": emu.upload("p.png", png)}, user=who)
        answers[who.name] = (await _ephemeral_reply(emu, ask, timeout=60)).content
    assert "secret garden" in answers["alice"]
    assert job.id in answers["mod"] and "secret garden" not in answers["mod"]

    adult = await h.imagine("a moody portrait --count 1 --steps 2", channel=emu.nsfw_channel)
    await h.result_of(adult)
    adult_job = await h.delivered(adult)
    refused = await emu.send_slash("show", {"job": adult_job.id}, user=emu.alice)
    assert "age-restricted" in (await _ephemeral_reply(emu, refused)).content
    _nothing_of(emu, adult_job.id, emu.general)
    inside = await emu.send_slash(
        "show", {"job": adult_job.id}, user=emu.alice, channel=emu.nsfw_channel
    )
    await h.result_of(inside)


async def test_a_policy_edit_keeps_the_instance_settings(two: Harness) -> None:
    h, emu = two, two.emu
    h.settings.moderation.nsfw_threshold = 0.3
    h.settings.moderation.extra_public_figures = ["Zorblax Quintavious"]
    base = Policy.default(h.settings)
    iid = await emu.send_slash(
        "policy set", {"field": "ai_label", "value": "true"}, user=emu.moderator
    )
    assert "updated" in (await _ephemeral_reply(emu, iid)).content
    policy = await load_policy(h.store, emu.guild.id, emu.general.id, base=base)
    assert policy.ai_label and policy.nsfw_threshold == 0.3
    assert "Zorblax Quintavious" in policy.public_figures
    blocked = await h.imagine("Zorblax Quintavious, leaked photo", user=emu.bob)
    assert "real person" in (await _ephemeral_reply(emu, blocked)).content


async def test_provenance_lookups_are_rate_limited_per_user(two: Harness) -> None:
    h, emu = two, two.emu
    h.bot.lookups = RateLimiter(1, 60.0)  # discord.lookups_per_minute = 1
    png = emu.upload("x.png", b"\x89PNG\r\n\x1a\n not really")
    first = await emu.send_slash(
        "provenance", {"image": png}, user=emu.carl, channel=emu.other_general
    )
    assert "too fast" not in (await _ephemeral_reply(emu, first, timeout=60)).content
    again = await emu.send_slash(
        "provenance", {"image": png}, user=emu.carl, channel=emu.other_general
    )
    assert "too fast" in (await _ephemeral_reply(emu, again, timeout=60)).content
    other = await emu.send_slash(
        "provenance", {"image": png}, user=emu.bmod, channel=emu.other_general
    )
    assert "too fast" not in (await _ephemeral_reply(emu, other, timeout=60)).content
