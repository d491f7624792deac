"""Caps hold under concurrency and presses are rate-limited: one user cannot take everyone's
queue, whatever order their concurrent requests finish their awaits in."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from core.config import Settings
from core.errors import UserInputError
from core.store import Store
from generation.admission import Admission, RateLimiter
from generation.request import GenerationRequest
from generation.worker import Worker
from tests.test_bot_e2e import Harness, _ephemeral_reply


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_reservations_count_against_both_caps_until_released() -> None:
    queued = {7: 1}
    admission = Admission(lambda u: (queued.get(u, 0), queued.get(u, 0)), max_queued_per_user=3)
    first = admission.reserve(7)
    admission.reserve(7)
    with pytest.raises(UserInputError, match="limit is 3"):
        admission.reserve(7)
    first.release()
    first.release()  # idempotent
    admission.reserve(7)
    admission.reserve(8, cap=1)
    with pytest.raises(UserInputError, match="this server's limit"):
        admission.reserve(8, cap=1)
    admission.reserve(8, cap=1, check=False)  # recovered work is never refused


def test_forgotten_reservations_expire() -> None:
    clock = Clock()
    admission = Admission(lambda u: (0, 0), max_queued_per_user=1, clock=clock)
    admission.reserve(1)
    with pytest.raises(UserInputError):
        admission.reserve(1)
    clock.now += 3600
    admission.reserve(1)


def test_rate_limiter_is_a_sliding_window_with_bounded_memory() -> None:
    clock = Clock()
    limiter = RateLimiter(2, 10.0, max_keys=3, clock=clock)
    assert limiter.retry_after("a") == 0 and limiter.retry_after("a") == 0
    assert limiter.retry_after("a") == pytest.approx(10.0)
    with pytest.raises(UserInputError, match="too fast"):
        limiter.check("a")
    clock.now = 10.5
    assert limiter.retry_after("a") == 0
    for key in "bcdef":
        limiter.retry_after(key)
    assert len(limiter._hits) == 3


async def test_twenty_concurrent_submits_against_a_cap_of_five_accept_five(
    tiny_engine, tiny_settings: Settings, tmp_path: Path
) -> None:
    settings = tiny_settings.model_copy(
        update={
            "data_dir": tmp_path,
            "queue": tiny_settings.queue.model_copy(update={"max_queued_per_user": 5}),
        }
    )
    async with await Store.open(settings.db_path) as store:
        worker = Worker(store, tiny_engine, settings)  # not started: nothing leaves the queue
        results = await asyncio.gather(
            *(
                worker.submit(GenerationRequest(prompt=f"a fox {i}", steps=1), user_id=1)
                for i in range(20)
            ),
            return_exceptions=True,
        )
        accepted = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, UserInputError)]
        assert len(accepted) == 5 and len(refused) == 15
        assert "limit is 5" in str(refused[0])
        assert len(await store.queued_jobs()) == 5
        assert worker.admission.reserved(1) == 0  # every slot became a job or was given back


@pytest.fixture
async def parked(discord_emulator, tiny_engine, tmp_path: Path):
    """The bot with its worker not started: accepted jobs stay queued."""
    from tests.test_bot_e2e import _harness

    async with _harness(
        discord_emulator, tiny_engine, tmp_path, real_postprocess=False, start_worker=False
    ) as h:
        yield h


async def test_twenty_concurrent_imagines_against_a_server_cap_of_five(
    parked: Harness,
) -> None:
    h = parked  # nothing runs, so nothing frees a slot meanwhile
    emu = h.emu
    cap = await emu.send_slash("policy user-cap", {"user": emu.bob, "cap": 5}, user=emu.moderator)
    await _ephemeral_reply(emu, cap)
    iids = await asyncio.gather(*(h.imagine(f"a fox {i}", user=emu.bob) for i in range(20)))
    await emu.wait_for(
        lambda: all(emu.interaction(i).acknowledged for i in iids), 30, "every answer"
    )
    refusals = [
        await _ephemeral_reply(emu, i) for i in iids if emu.interaction(i).initial_response == 4
    ]
    assert len(refusals) == 15
    assert all("limit" in r.content for r in refusals)
    for _ in range(600):  # the five accepted ones become jobs
        if len(await h.store.queued_jobs()) >= 5:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # and no more than five
    assert [j.user_id for j in await h.store.queued_jobs()] == [emu.bob.id] * 5
    assert not emu.violations


@pytest.fixture
async def strict(discord_emulator, tiny_engine, tmp_path: Path):
    """Two presses per minute per user."""
    from tests.test_bot_e2e import _harness

    async with _harness(
        discord_emulator,
        tiny_engine,
        tmp_path,
        real_postprocess=False,
        press_limit=2,
        press_window_s=60,
    ) as h:
        yield h


async def test_presses_are_rate_limited_and_a_refused_reaction_posts_no_placeholder(
    strict: Harness,
) -> None:
    h = strict
    emu = h.emu
    iid = await h.imagine("a kite --count 1")
    result = await h.result_of(iid)
    job = await h.delivered(iid)
    presses = [await emu.click(result, f"ib:r:{job.id}", user=emu.bob) for _ in range(3)]
    await emu.wait_for(lambda: all(emu.interaction(p).acknowledged for p in presses), 20, "acks")
    assert [emu.interaction(p).initial_response for p in presses] == [5, 5, 4]
    assert "too fast" in (await _ephemeral_reply(emu, presses[2])).content

    # Over the cap: the reaction is refused before anything is posted for it.
    cap = await emu.send_slash("policy user-cap", {"user": emu.owner, "cap": 0}, user=emu.moderator)
    await _ephemeral_reply(emu, cap)
    await emu.add_reaction(
        result, "\N{CLOCKWISE RIGHTWARDS AND LEFTWARDS OPEN CIRCLE ARROWS}", emu.owner
    )
    refusal = await emu.wait_for_message(
        lambda m: "limit" in m.content and m.interaction_id is None, 20
    )
    assert f"<@{emu.owner.id}>" in refusal.content
    queued = [m for m in emu.messages_in(emu.general) if "is queued" in m.content]
    assert queued == []
