"""End to end (real bot, worker, tiny model, store, emulator): Zoom Out, Pan, Vary (Region),
permutations and --tile, as a community member would use them (issue #18)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.conftest import TINY_128
from tests.test_bot_e2e import Harness, _ephemeral_reply, _harness
from tests.test_tiling import seams


@pytest.fixture
async def harness(discord_emulator, tiny_engine_128, tmp_path: Path) -> AsyncIterator[Harness]:
    """With the real post-processing (moderation, watermark): what users get. 128 px images,
    so an upscale is 256 px: the watermark reads back reliably from 256 px a side."""
    async with _harness(
        discord_emulator, tiny_engine_128, tmp_path, real_postprocess=True, model=TINY_128
    ) as h:
        yield h


@pytest.fixture
async def quick_harness(discord_emulator, tiny_engine, tmp_path: Path) -> AsyncIterator[Harness]:
    """With the plain PNG saver: pixels compare exactly (no watermark)."""
    async with _harness(discord_emulator, tiny_engine, tmp_path, real_postprocess=False) as h:
        yield h


# Pixels this far from a repainted area keep the source (the seam is blended inside it).
MARGIN = 8


def _image(msg: Any, k: int = 0) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(msg.attachments[k].data)).convert("RGB"), np.float64)


def _source(path: str) -> Image.Image:
    return Image.open(path).convert("RGB")


async def _single_result(harness: Harness, prompt: str) -> tuple[Any, Any]:
    iid = await harness.imagine(prompt)
    msg = await harness.result_of(iid)
    return msg, await harness.delivered(iid)


async def test_zoom_out_2x_of_an_upscale_keeps_the_source_in_the_centre(harness: Harness) -> None:
    emu = harness.emu
    grid, job = await _single_result(harness, "a lighthouse on a cliff --count 1 --steps 2")
    up_iid = await emu.click(grid, f"ib:u:{job.id}:0", user=emu.alice)
    up_msg = await harness.result_of(up_iid)
    upscale = await harness.delivered(up_iid)
    assert "ib:e:" + upscale.id + ":0:z2" in up_msg.custom_ids()

    zoom_iid = await emu.click(up_msg, f"ib:e:{upscale.id}:0:z2", user=emu.bob)
    zoom_msg = await harness.result_of(zoom_iid)
    zoom = await harness.delivered(zoom_iid)
    assert zoom.kind.value == "zoom" and zoom.parent_job_id == upscale.id
    assert zoom.user_id == emu.bob.id and set(zoom.credited_user_ids) >= {emu.alice.id, emu.bob.id}
    assert "Zoom Out 2x of" in zoom_msg.content

    source = _source((await harness.store.get_image(upscale.id, 0)).path)
    width, height = source.size
    shrunk = np.asarray(source.resize((width // 2, height // 2), Image.Resampling.LANCZOS), float)
    images = await harness.store.images_for_job(zoom.id)
    assert images
    for record in images:
        out = np.asarray(Image.open(record.path).convert("RGB"), np.float64)
        assert out.shape[:2] == (height, width), "a zoom keeps the image's size"
        x0, y0 = width // 4, height // 4
        centre = out[y0 + MARGIN : y0 + height // 2 - MARGIN, x0 + MARGIN : x0 + width // 2 - MARGIN]
        inner = shrunk[MARGIN:-MARGIN, MARGIN:-MARGIN]
        # Equal but for the result's own watermark (PSNR >= 40 dB).
        assert np.abs(centre - inner).mean() < 3.0
        border = out[:MARGIN, :]
        assert border.std() > 1.0, "the border was painted, not left flat"
        assert record.watermark_payload

    # Watermarked with its own job: /provenance on the delivered image names the zoom.
    ask = await emu.send_slash(
        "provenance", {"image": emu.upload("zoomed.png", zoom_msg.attachments[0].data)},
        user=emu.bob,
    )
    await emu.wait_for(
        lambda: (m := emu.original_message(ask)) and zoom.id in m.content and m, 60, "provenance"
    )

    # Its buttons work after a restart: upscale image 1 of the zoom.
    await harness.stop()
    await harness.start()
    again = await emu.click(zoom_msg, f"ib:u:{zoom.id}:0", user=emu.alice)
    await harness.result_of(again)
    assert (await harness.delivered(again)).parent_job_id == zoom.id


async def test_pan_right_extends_the_canvas_and_keeps_the_source_on_the_left(
    quick_harness: Harness,
) -> None:
    harness = quick_harness
    emu = harness.emu
    msg, job = await _single_result(harness, "a long beach at dawn --count 1 --steps 2 --seed 4")
    source = np.asarray(_source((await harness.store.get_image(job.id, 0)).path), np.float64)
    height, width = source.shape[:2]

    pan = await emu.click(msg, f"ib:e:{job.id}:0:pr", user=emu.alice)
    pan_msg = await harness.result_of(pan)
    panned = await harness.delivered(pan)
    assert panned.kind.value == "pan" and "Pan right of" in pan_msg.content
    assert panned.parent_job_id == job.id and panned.parent_image_index == 0
    for record in await harness.store.images_for_job(panned.id):
        out = np.asarray(Image.open(record.path).convert("RGB"), np.float64)
        assert out.shape[0] == height and out.shape[1] > width
        kept = out[:, : width - MARGIN]
        assert np.abs(kept - source[:, : width - MARGIN]).max() <= 1.0
        assert np.abs(out[:, width + MARGIN :]).std() > 1.0


async def test_vary_region_left_half_changes_only_the_left_half(quick_harness: Harness) -> None:
    harness = quick_harness
    emu = harness.emu
    msg, job = await _single_result(harness, "a cat on a sofa --count 1 --steps 2 --seed 8")
    source = np.asarray(_source((await harness.store.get_image(job.id, 0)).path), np.float64)
    height, width = source.shape[:2]

    picker_iid = await emu.click(msg, f"ib:vr:{job.id}:0", user=emu.bob)
    picker = await emu.wait_for(
        lambda: next(
            (
                m
                for m in [emu.original_message(picker_iid), *emu.followups(picker_iid)]
                if m is not None and m.components
            ),
            None,
        ),
        30,
        "region picker",
    )
    assert picker.ephemeral
    options = [o for c in picker.components for s in c["components"] for o in s["options"]]
    left = next(o["value"] for o in options if o["label"] == "Left half")
    chosen = await emu.click(picker, f"ib:rs:{job.id}:0", user=emu.bob, values=[left])
    await emu.wait_for(lambda: emu.interaction(chosen).modal, 10, "region prompt form")
    submitted = await emu.submit_modal(chosen, {"prompt": "a dog on a sofa --steps 2"}, user=emu.bob)
    result = await harness.result_of(submitted)
    region = await harness.delivered(submitted)
    assert region.kind.value == "region" and region.parent_job_id == job.id
    assert region.params["prompt"].startswith("a dog on a sofa")
    assert "Vary (Region) of" in result.content
    for record in await harness.store.images_for_job(region.id):
        out = np.asarray(Image.open(record.path).convert("RGB"), np.float64)
        assert out.shape == source.shape
        right = slice(width // 2 + MARGIN, None)
        assert np.abs(out[:, right] - source[:, right]).max() <= 1.0
        left_half = slice(0, width // 2 - MARGIN)
        assert np.abs(out[:, left_half] - source[:, left_half]).mean() > 5.0


async def test_permutations_queue_one_job_per_combination(quick_harness: Harness) -> None:
    harness = quick_harness
    emu = harness.emu
    iid = await harness.imagine("a {red, green, blue} bird --count 1 --steps 2")
    first = await harness.result_of(iid)
    assert "a red bird" in first.content

    def followup_results() -> list[Any] | None:
        done = [m for m in emu.followups(iid) if m.attachments and m.components]
        return done if len(done) == 2 else None

    others = await emu.wait_for(followup_results, 120, "two more permutation results")
    contents = " ".join(m.content for m in others)
    assert "a green bird" in contents and "a blue bird" in contents
    async with harness.store.db.execute("SELECT params FROM jobs") as cur:
        prompts = sorted([r[0] for r in await cur.fetchall()])
    assert len(prompts) == 3
    assert not await harness.store.accepted_interactions()


async def test_a_permutation_with_a_blocked_word_queues_nothing(quick_harness: Harness) -> None:
    harness = quick_harness
    emu = harness.emu
    done = await emu.send_slash("policy ban", {"term": "pineapple"}, user=emu.moderator)
    assert "pineapple" in (await _ephemeral_reply(emu, done)).content
    iid = await harness.imagine("a {red, pineapple} hat --count 1 --steps 2")
    assert "blocked" in (await _ephemeral_reply(emu, iid)).content.lower()
    async with harness.store.db.execute("SELECT COUNT(*) FROM jobs") as cur:
        assert (await cur.fetchone())[0] == 0


async def test_tile_images_wrap_around(quick_harness: Harness) -> None:
    harness = quick_harness
    prompt = "a mossy stone wall --count 1 --steps 2 --seed 2"
    msg, job = await _single_result(harness, f"{prompt} --tile")
    assert job.params["tile"] is True and "--tile" in msg.content
    plain, _ = await _single_result(harness, prompt)
    # Correlation of the last and first column (row) against neighbouring ones: the tiny model
    # paints noise, where a correlation sees a seam that pixel differences drown in.
    wrap_x, inside_x, wrap_y, inside_y = seams(Image.open(io.BytesIO(msg.attachments[0].data)))
    assert wrap_x > inside_x - 0.1 and wrap_y > inside_y - 0.1, "the tile wraps around"
    seam_x, inside_x, seam_y, inside_y = seams(Image.open(io.BytesIO(plain.attachments[0].data)))
    assert seam_x < inside_x / 2 and seam_y < inside_y / 2, "without --tile the edges do not meet"


async def test_custom_zoom_and_remix_mode_ask_for_the_prompt_first(quick_harness: Harness) -> None:
    harness = quick_harness
    emu = harness.emu
    msg, job = await _single_result(harness, "a harbour at dusk --count 1 --steps 2 --seed 6")

    opened = await emu.click(msg, f"ib:e:{job.id}:0:zc", user=emu.bob)
    modal = await emu.wait_for(lambda: emu.interaction(opened).modal, 10, "custom zoom form")
    shown = modal["components"][0]["components"][0]["value"]
    assert shown.startswith("a harbour at dusk") and shown.endswith("--zoom 2")
    sub = await emu.submit_modal(
        opened, {"prompt": "a harbour at dusk with boats --zoom 1.5 --count 1"}, user=emu.bob
    )
    zoom_msg = await harness.result_of(sub)
    zoomed = await harness.delivered(sub)
    assert zoomed.params["canvas"] == "zoom:1.5" and zoomed.params["count"] == 1
    assert zoomed.params["prompt"] == "a harbour at dusk with boats"
    assert "Zoom Out 1.5x of" in zoom_msg.content

    bad = await emu.click(msg, f"ib:e:{job.id}:0:zc", user=emu.bob)
    await emu.wait_for(lambda: emu.interaction(bad).modal, 10, "custom zoom form")
    refused = await emu.submit_modal(bad, {"prompt": "a harbour --zoom 7"}, user=emu.bob)
    assert "--zoom must be a number from 1.1 to 2" in (await _ephemeral_reply(emu, refused)).content

    # Remix mode: a pan asks for the prompt first, then pans with the edited one.
    done = await emu.send_slash("settings", {"remix": True}, user=emu.alice)
    assert "remix mode **on**" in (await _ephemeral_reply(emu, done)).content
    pan = await emu.click(msg, f"ib:e:{job.id}:0:pl", user=emu.alice)
    await emu.wait_for(lambda: emu.interaction(pan).modal, 10, "remix-mode pan form")
    sub = await emu.submit_modal(pan, {"prompt": "a harbour at dawn --count 1"}, user=emu.alice)
    await harness.result_of(sub)
    panned = await harness.delivered(sub)
    assert panned.params["canvas"] == "pan:left" and panned.params["prompt"] == "a harbour at dawn"


async def test_a_model_without_guidance_says_what_it_ignores(
    discord_emulator, tiny_engine, tmp_path: Path
) -> None:
    """Turbo models run without guidance: --no and --chaos do nothing there, and the reply says
    so rather than dropping them silently."""
    async with _harness(
        discord_emulator, tiny_engine, tmp_path, real_postprocess=False,
        model={"default_guidance": 1.0},
    ) as harness:
        msg, _ = await _single_result(harness, "a quiet lake --no boats --count 1 --steps 2")
        assert "without guidance" in msg.content and "--no" in msg.content
        plain, _ = await _single_result(harness, "a quiet lake --count 1 --steps 2")
        assert "without guidance" not in plain.content
