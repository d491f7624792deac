"""A channel deleted while its jobs wait or run: the emulator answers 404 as Discord does, and the
results (or failure notices) reach their users by DM under a note; nothing is posted where the
channel was, and each job is delivered exactly once. Real bot, worker, tiny model and SQLite."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord
import pytest

from bot.delivery import channel_gone_note
from playground.emulator import EmulatorUsageError
from tests.test_bot_e2e import Harness, _ephemeral_reply, _harness


@pytest.fixture
async def paused(discord_emulator, tiny_engine, tmp_path: Path) -> AsyncIterator[Harness]:
    """The bot with its worker not started yet, so a test decides when jobs run."""
    async with _harness(discord_emulator, tiny_engine, tmp_path, real_postprocess=False) as h:
        await h.stop()
        await h.start(start_worker=False)
        yield h


def _dms(emu: Any, user: Any) -> list[Any]:
    return emu.messages_in(emu.dm_channel(user))


def _touching(emu: Any, channel_id: int, iids: list[int], since: int) -> list[Any]:
    """Requests after index ``since`` that reach the channel: its routes, or its interactions."""
    return [
        r
        for r in emu.requests[since:]
        if f"/channels/{channel_id}/" in f"{r.path}/" or r.interaction_id in iids
    ]


async def test_a_deleted_channel_answers_404_like_discord(paused: Harness) -> None:
    emu, bot = paused.emu, paused.bot
    doomed = emu.world.add_channel(emu.guild, "doomed")
    iid = await paused.imagine("a kite --count 1 --steps 2", channel=doomed)
    await emu.wait_for_response(iid)
    thinking = emu.original_message(iid)
    await emu.delete_channel(doomed)
    await emu.wait_for(lambda: bot.get_channel(doomed.id) is None, 10, "CHANNEL_DELETE")

    webhook = discord.Webhook.partial(emu.application_id, emu.interaction(iid).token, client=bot)
    with pytest.raises(discord.NotFound) as edit:
        await webhook.edit_message(thinking.id, content="done")
    with pytest.raises(discord.NotFound) as fetch:
        await webhook.fetch_message(thinking.id)
    with pytest.raises(discord.NotFound) as followup:
        await webhook.send("a follow-up", wait=True)
    channel = bot.get_partial_messageable(doomed.id, guild_id=emu.guild.id)
    with pytest.raises(discord.NotFound) as post:
        await channel.send("hello")
    with pytest.raises(discord.NotFound) as channel_edit:
        await channel.get_partial_message(thinking.id).edit(content="done")
    codes = [e.value.code for e in (edit, fetch, followup, post, channel_edit)]
    assert codes == [10008, 10008, 10003, 10003, 10003]
    assert thinking.content == "" and not thinking.edit_times, "nothing changed the message"
    with pytest.raises(EmulatorUsageError, match="deleted"):
        await paused.imagine("a kite", channel=doomed)
    with pytest.raises(EmulatorUsageError, match="deleted"):
        await emu.add_reaction(
            thinking, "\N{CLOCKWISE RIGHTWARDS AND LEFTWARDS OPEN CIRCLE ARROWS}", emu.bob
        )

    # Other channels are untouched.
    general = bot.get_partial_messageable(emu.general.id, guild_id=emu.guild.id)
    assert (await general.send("still here")).content == "still here"


async def test_results_for_a_deleted_channel_reach_their_users_by_dm(paused: Harness) -> None:
    """Alice asks publicly, Bob privately; the channel goes while one job is generating (held in
    post-processing) and the other waits. Both get their images and buttons by DM."""
    emu, bot = paused.emu, paused.bot
    settings = await emu.send_slash("settings", {"private": True}, user=emu.bob)
    await _ephemeral_reply(emu, settings)
    doomed = emu.world.add_channel(emu.guild, "doomed")
    iids = [
        await paused.imagine(
            "a kite over a field --count 2 --steps 2", user=emu.alice, channel=doomed
        ),
        await paused.imagine(
            "a kite in the rain --count 1 --steps 2", user=emu.bob, channel=doomed
        ),
    ]
    jobs = [await paused.job_for(i) for i in iids]
    assert not jobs[0].delivery.get("private") and jobs[1].delivery["private"]

    worker = bot.services.worker
    save, entered, release = worker.postprocess, threading.Event(), threading.Event()

    def held(job: Any, result: Any) -> Any:
        entered.set()
        release.wait(60)
        return save(job, result)

    worker.postprocess = held
    await worker.start()
    await emu.wait_for(entered.is_set, 60, "a job in post-processing")
    since = len(emu.requests)
    await emu.delete_channel(doomed)
    release.set()

    for user, job, files in [(emu.alice, jobs[0], 1), (emu.bob, jobs[1], 1)]:
        [dm] = await emu.wait_for(lambda u=user: _dms(emu, u), 120, f"a DM to {user.name}")
        first, _, rest = dm.content.partition("\n")
        assert first == channel_gone_note(job) and f"<#{doomed.id}>" in first
        assert rest.startswith("**a kite") and job.id in rest
        assert len(dm.attachments) == files and dm.attachments[0].data
        assert any(cid.startswith("ib:") and job.id in cid for cid in dm.custom_ids())
        assert [u.id for u in dm.mentions] == [user.id]
        done = await paused.delivered(iids[jobs.index(job)])
        assert done.delivery["result_message_id"] == dm.id
        assert "gone" in done.delivery["rerouted"] and "failed" not in done.delivery
        # Exactly once: the claim is taken, and another delivery attempt sends nothing.
        assert not await paused.store.mark_delivered(job.id)
        assert not await bot.delivery.deliver(job.id)
        assert len(_dms(emu, user)) == 1

    # The buttons work in the DM: a variation of Alice's image 1 comes back there.
    [dm] = _dms(emu, emu.alice)
    with pytest.raises(EmulatorUsageError, match="recipient"):
        await emu.click(dm, f"ib:v:{jobs[0].id}:0:s", user=emu.bob)
    press = await emu.click(dm, f"ib:v:{jobs[0].id}:0:s", user=emu.alice)
    varied = await paused.result_of(press)  # images *and* buttons: a preview is not a result
    assert varied.channel_id == emu.dm_channel(emu.alice).id
    assert f"Variation of <@{emu.alice.id}>'s image 1" in varied.content

    touching = _touching(emu, doomed.id, iids, since)
    assert touching, "the bot did try where the user asked"
    assert not [r for r in touching if r.ok], "nothing reached the deleted channel"
    assert {(r.status, (r.response or {}).get("code")) for r in touching} <= {
        (404, 10003),
        (404, 10008),
    }
    # The promise is about results, whatever the machine's speed: a progress preview may have
    # been shown while the channel still existed, but no result image was ever posted there.
    shown = [
        a.filename
        for m in emu.messages_in(doomed, include_deleted=True)
        for a in m.attachments
    ]
    assert all(name.endswith("_preview.jpg") for name in shown), shown
    assert not [m for m in emu.messages_in(doomed, include_deleted=True) if m.custom_ids()]


async def test_closed_dms_and_failure_notices_after_the_channel_is_gone(paused: Harness) -> None:
    """Carol's DMs are closed: her job is delivered with both reasons recorded and nothing
    crashes. The moderator's job failed: the failure notice comes by DM under the same note."""
    emu, bot = paused.emu, paused.bot
    carol = emu.world.add_user("carol", guild=emu.guild)
    carol.dms_closed = True
    doomed = emu.world.add_channel(emu.guild, "doomed")
    iids = [
        await paused.imagine("a kite at dawn --count 1 --steps 2", user=carol, channel=doomed),
        await paused.imagine(
            "a kite at noon --count 1 --steps 2", user=emu.moderator, channel=doomed
        ),
    ]
    closed_job, failing = [await paused.job_for(i) for i in iids]
    assert await paused.store.mark_failed(failing.id, "the GPU ran out of memory")
    since = len(emu.requests)
    await emu.delete_channel(doomed)
    await bot.services.worker.start()

    stuck = await paused.delivered(iids[0], timeout=120)
    reason = stuck.delivery["failed"]
    assert "gone" in reason and "does not accept direct messages" in reason, reason
    assert _dms(emu, carol) == []
    assert "result_message_id" not in stuck.delivery

    [notice] = await emu.wait_for(lambda: _dms(emu, emu.moderator), 60, "the failure notice")
    first, _, rest = notice.content.partition("\n")
    assert first == channel_gone_note(failing)
    assert failing.id in rest and "failed" in rest and "ran out of memory" in rest
    assert (await paused.delivered(iids[1])).delivery["result_message_id"] == notice.id
    assert not [r for r in _touching(emu, doomed.id, iids, since) if r.ok]

    # The queue goes on: the next job, in a live channel, is delivered where it was asked.
    after = await paused.imagine("a kite at night --count 1 --steps 2", user=emu.bob)
    await paused.result_of(after)


async def test_a_deleted_reply_in_a_live_channel_becomes_a_channel_message(paused: Harness) -> None:
    """Only the bot's "thinking" reply was deleted (by a moderator): the channel is still there,
    so the result is posted in it for the user, not sent by DM."""
    emu, bot = paused.emu, paused.bot
    iid = await paused.imagine("a kite by the sea --count 1 --steps 2", user=emu.alice)
    await emu.wait_for_response(iid)
    await emu.delete_message(emu.original_message(iid))
    await bot.services.worker.start()
    job = await paused.delivered(iid, timeout=120)
    posted = emu.messages_in(emu.general)[-1]
    assert posted.interaction_id is None and posted.attachments and posted.custom_ids()
    assert job.id in posted.content and [u.id for u in posted.mentions] == [emu.alice.id]
    assert job.delivery["result_message_id"] == posted.id and "rerouted" not in job.delivery
    assert _dms(emu, emu.alice) == []
