"""A crash between Discord accepting a result and the store claiming its delivery: after the
restart the result must not be sent a second time, and a result that never reached Discord
must still be sent. Real bot, emulator, tiny model; the crash window is reproduced by undoing
the claim (``delivered_at``) exactly as a ``kill -9`` right after Discord's answer leaves it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_bot_e2e import Harness, _harness


@pytest.fixture
async def quick(discord_emulator, tiny_engine, tmp_path: Path) -> AsyncIterator[Harness]:
    async with _harness(discord_emulator, tiny_engine, tmp_path, real_postprocess=False) as h:
        yield h


def _result_sends(emu: Any, iid: int) -> int:
    """Requests that put files on interaction ``iid``'s messages."""
    return sum(1 for r in emu.interaction_responses(iid) if r.ok and r.files)


async def _crash_before_the_claim(h: Harness, iid: int) -> Any:
    job = await h.delivered(iid)
    assert job.delivery.get("sending")  # marked before the first try
    await h.store.db.execute("UPDATE jobs SET delivered_at = NULL WHERE id = ?", (job.id,))
    await h.store.db.commit()
    return job


async def test_a_result_that_reached_discord_is_not_sent_again(quick: Harness) -> None:
    emu = quick.emu
    iid = await quick.imagine("a harbour at night --count 1")
    shown = await quick.result_of(iid)
    job = await _crash_before_the_claim(quick, iid)
    sends = _result_sends(emu, iid)

    message = await quick.bot.delivery.deliver(job.id)

    assert message is not None and message.id == shown.id
    assert _result_sends(emu, iid) == sends
    assert (await quick.store.get_job(job.id)).delivered_at is not None


async def test_a_result_that_never_reached_discord_is_sent(quick: Harness) -> None:
    emu = quick.emu
    iid = await quick.imagine("a harbour at dawn --count 1")
    shown = await quick.result_of(iid)
    job = await _crash_before_the_claim(quick, iid)
    shown.attachments = []  # the edit never arrived: Discord still shows "thinking..."
    sends = _result_sends(emu, iid)

    assert await quick.bot.delivery.deliver(job.id) is not None

    assert _result_sends(emu, iid) == sends + 1
    assert any(job.id in a.filename for a in emu.original_message(iid).attachments)
