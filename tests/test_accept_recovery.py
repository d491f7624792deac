"""Start-up recovery of acknowledged interactions, in-process (the kill -9 version is
tests/test_crash_recovery.py): the command dies right after its ack, a "new process" replays it
once; a row whose job exists is dropped; one that keeps crashing the bot is given up, saying so."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.accept import MAX_REPLAYS
from tests.test_bot_e2e import Harness, _harness


@pytest.fixture
async def h(discord_emulator, tiny_engine, tmp_path: Path) -> AsyncIterator[Harness]:
    async with _harness(discord_emulator, tiny_engine, tmp_path, real_postprocess=False) as h:
        yield h


def _results(emu: Any, iid: int) -> int:
    return sum(
        1
        for r in emu.interaction_responses(iid)
        if r.ok and r.files and isinstance(r.json, dict) and r.json.get("components")
    )


async def _acked_then_died(h: Harness, prompt: str, monkeypatch) -> int:
    """A /imagine whose handler dies (as in a crash) right after its ack."""
    submitter, acceptor = h.bot.submitter, h.bot.acceptor

    def die(*args: Any, **kwargs: Any) -> Any:
        raise asyncio.CancelledError  # no refusal, no job: what a kill leaves behind

    monkeypatch.setattr(submitter, "_merge_options", die)
    iid = await h.imagine(prompt)
    await h.emu.wait_for_response(iid)
    await h.emu.wait_for(lambda: iid in acceptor._live, 10, "recorded")
    monkeypatch.undo()
    acceptor._live.clear()  # as seen by the next process
    return iid


async def test_an_interaction_acked_before_a_crash_is_replayed_once(h: Harness, monkeypatch):
    emu, acceptor = h.emu, h.bot.acceptor
    iid = await _acked_then_died(h, "a lighthouse --count 1", monkeypatch)
    assert [r.id for r in await h.store.accepted_interactions()] == [iid]
    assert await acceptor.recover(h.bot) == 1
    await h.result_of(iid)
    job = await h.delivered(iid)
    assert await h.store.accepted_interactions() == []  # the job replaced the row
    # Crashed between the job and dropping the row: the row comes back, the job is found.
    await h.store.db.execute(
        "INSERT INTO accepted (id, created_at, user_id, payload) VALUES (?, 0, 1, '{}')", (iid,)
    )
    assert (await h.store.job_for_interaction(iid)).id == job.id
    await acceptor.recover(h.bot)
    assert await h.store.accepted_interactions() == []
    await asyncio.sleep(0.5)
    assert _results(emu, iid) == 1


async def test_an_interaction_that_keeps_crashing_the_bot_is_given_up(h: Harness, monkeypatch):
    emu, acceptor = h.emu, h.bot.acceptor
    iid = await _acked_then_died(h, "a lighthouse --count 1", monkeypatch)
    await h.store.db.execute("UPDATE accepted SET attempts = ?", (MAX_REPLAYS,))
    await acceptor.recover(h.bot)
    told = await emu.wait_for(
        lambda: any("could not be processed" in m.content for m in emu.followups(iid)), 20, "told"
    )
    assert told and await h.store.accepted_interactions() == []
    async with h.store.db.execute("SELECT COUNT(*) FROM jobs") as cur:
        assert (await cur.fetchone())[0] == 0


def test_canary_discord_py_still_parses_interactions_where_we_keep_the_raw_payload() -> None:
    """bot/accept.py wraps this internal parser to see INTERACTION_CREATE whole; if a discord.py
    upgrade moves it, this fails here instead of silently losing crash safety."""
    import discord

    from bot.accept import keep_raw_interactions

    client = discord.Client(intents=discord.Intents.none())
    raw = keep_raw_interactions(client)
    assert callable(client._connection.parsers["INTERACTION_CREATE"])
    assert len(raw) == 0
