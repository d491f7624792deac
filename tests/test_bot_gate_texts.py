"""Every text a user writes is gated, not only the prompt: the negative prompt (inline ``--no``,
the ``negative`` option, a remix's ``--no``) is shown in the public result message, so a word the
gate refuses in the prompt is refused there too, before anything is queued. Real bot, emulator,
tiny model, SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_bot_e2e import Harness, _ephemeral_reply, _harness


@pytest.fixture
async def quick(discord_emulator, tiny_engine, tmp_path: Path) -> AsyncIterator[Harness]:
    """The bot with the plain PNG saver: these tests are about what reaches the queue."""
    async with _harness(discord_emulator, tiny_engine, tmp_path, real_postprocess=False) as h:
        yield h


async def _jobs(harness: Harness) -> int:
    async with harness.store.db.execute("SELECT COUNT(*) FROM jobs") as cur:
        return (await cur.fetchone())[0]


async def _refused(harness: Harness, iid: int) -> str:
    reply = (await _ephemeral_reply(harness.emu, iid)).content
    assert "blocked" in reply.lower() and "negative prompt" in reply.lower(), reply
    public = harness.emu.original_message(iid)
    assert public is None or public.deleted, "the public 'thinking' message is removed"
    return reply


async def _audited(harness: Harness, user_id: int) -> list[tuple[Any, ...]]:
    async with harness.store.db.execute(
        "SELECT action, stage FROM audit_log WHERE user_id = ?", (user_id,)
    ) as cur:
        return [tuple(r) for r in await cur.fetchall()]


async def test_a_blocked_word_after_no_is_refused_before_anything_is_queued(
    quick: Harness,
) -> None:
    harness, emu = quick, quick.emu
    inline = await harness.imagine("a quiet beach at dawn --no naked woman", user=emu.bob)
    await _refused(harness, inline)
    option = await harness.imagine("a quiet beach at dawn", negative="naked woman", user=emu.bob)
    await _refused(harness, option)
    assert await _jobs(harness) == 0, "a refused negative prompt never becomes a job"
    assert await _audited(harness, emu.bob.id) == [("block", "prompt")] * 2

    # A harmless negative prompt still works, and is what the model gets.
    ok = await harness.imagine("a quiet beach at dawn --no people --count 1 --steps 2")
    await harness.result_of(ok)
    job = await harness.delivered(ok)
    assert "people" in job.params["negative_prompt"]


async def test_a_remix_with_a_blocked_negative_is_refused(quick: Harness) -> None:
    harness, emu = quick, quick.emu
    iid = await harness.imagine("a paper boat --count 1 --steps 2", user=emu.alice)
    grid = await harness.result_of(iid)
    parent = await harness.delivered(iid)
    opened = await emu.click(grid, f"ib:m:{parent.id}", user=emu.bob)
    await emu.wait_for(lambda: emu.interaction(opened).modal, 10, "remix modal")
    sub = await emu.submit_modal(
        opened, {"prompt": "a paper boat --no naked woman --steps 2"}, user=emu.bob
    )
    await _refused(harness, sub)
    assert await _jobs(harness) == 1, "only the parent job exists"
