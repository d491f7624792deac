"""End to end: /blend with a tiny IP-Adapter built in code, and without one (issue #18)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import TINY_128
from tests.test_bot_e2e import Harness, _ephemeral_reply, _harness


@pytest.fixture
async def blend_harness(
    discord_emulator, tiny_engine_128, tmp_path: Path
) -> AsyncIterator[Harness]:
    async with _harness(
        discord_emulator, tiny_engine_128, tmp_path, real_postprocess=False, model=TINY_128
    ) as h:
        yield h


def _png(seed: int, size: tuple[int, int] = (64, 64)) -> bytes:
    """A picture of its own: a colour gradient whose colours come from ``seed``."""
    rng = np.random.default_rng(seed)
    start, end = rng.integers(0, 255, 3), rng.integers(0, 255, 3)
    ramp = np.linspace(0.0, 1.0, size[0])[None, :, None]
    pixels = (start + (end - start) * ramp).repeat(size[1], axis=0).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


async def test_blend_of_two_images_delivers_a_grid_that_depends_on_them(
    blend_harness: Harness,
) -> None:
    harness = blend_harness
    emu = harness.emu

    message_of: dict[str, object] = {}

    async def blend(a: int, b: int) -> tuple[Image.Image, object]:
        iid = await emu.send_slash(
            "blend",
            {
                "image1": emu.upload(f"a{a}.png", _png(a)),
                "image2": emu.upload(f"b{b}.png", _png(b)),
                "prompt": "a landscape --seed 11 --count 1 --steps 2",
            },
        )
        msg = await harness.result_of(iid)
        job = await harness.delivered(iid)
        message_of[job.id] = msg
        return Image.open(io.BytesIO(msg.attachments[0].data)).convert("RGB"), job

    first, job = await blend(1, 2)
    assert job.kind.value == "blend" and len(job.params["references"]) == 2
    same, _ = await blend(1, 2)
    other, _ = await blend(3, 4)
    diff = lambda x, y: np.abs(np.asarray(x, float) - np.asarray(y, float)).mean()  # noqa: E731
    assert diff(first, same) == 0.0, "same images and seed give the same blend"
    assert diff(first, other) > 0.5, "other images give another blend"

    # A reroll of a blend blends the same images again (by anyone), with new seeds.
    reroll = await emu.click(message_of[job.id], f"ib:r:{job.id}", user=emu.bob)
    await harness.result_of(reroll)
    rerolled = await harness.delivered(reroll)
    assert rerolled.parent_job_id == job.id and len(rerolled.params["references"]) == 2


@pytest.fixture
async def quick_harness(discord_emulator, tiny_engine, tmp_path: Path) -> AsyncIterator[Harness]:
    async with _harness(discord_emulator, tiny_engine, tmp_path, real_postprocess=False) as h:
        yield h


async def test_blend_without_an_adapter_says_how_to_enable_it(quick_harness: Harness) -> None:
    emu = quick_harness.emu
    iid = await emu.send_slash(
        "blend", {"image1": emu.upload("a.png", _png(1)), "image2": emu.upload("b.png", _png(2))}
    )
    answer = await _ephemeral_reply(emu, iid)
    assert "model.ip_adapter" in answer.content
    async with quick_harness.store.db.execute("SELECT COUNT(*) FROM jobs") as cur:
        assert (await cur.fetchone())[0] == 0
