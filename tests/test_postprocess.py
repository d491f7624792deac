"""The worker's post-processing step on the real tiny engine, NudeNet, watermark and store.

The tiny model makes 64x64 images: too small to carry the mark reliably, so they must come out
recorded as unverified (never crash, never claim a mark that is not there). Moderation
outcomes that NudeNet cannot be made to produce from test pictures (a block, a spoiler) use a
stand-in ``check_image``: the step's own handling of the decision is what is tested.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from core.config import Settings
from core.jobs import Job, JobKind, JobStatus
from core.store import Store
from generation.engine import GenerationResult, make_grid
from generation.request import GenerationRequest
from generation.worker import Worker
from moderation import provenance, watermark
from moderation.decision import Decision
from moderation.policy import Policy, save_policy
from moderation.postprocess import PostProcessor, make_postprocess
from moderation.watermark_key import key_for_settings


@pytest.fixture
async def store(tmp_path: Path):
    s = await Store.open(tmp_path / "imagine.db")
    yield s
    await s.close()


def settings_for(base: Settings, tmp_path: Path) -> Settings:
    return base.model_copy(
        update={"data_dir": tmp_path, "provenance": base.provenance.model_copy(update={"c2pa": False})}
    )


async def run_on_worker(worker: Worker, store: Store, **submit) -> Job:
    await worker.start()
    job = await worker.submit(
        GenerationRequest("a lighthouse at dusk", count=2), user_id=3, guild_id=5, channel_id=6,
        **submit,
    )
    await worker.join()
    await worker.stop()
    return await store.get_job(job.id)


async def test_engine_path_images_are_marked_recorded_and_described(tiny_engine, tiny_settings, tmp_path, store):
    settings = settings_for(tiny_settings, tmp_path)
    post = make_postprocess(settings, store)  # the bot's factory: real NudeNet check
    job = await run_on_worker(Worker(store, tiny_engine, settings, postprocess=post), store)
    assert job.status == JobStatus.DONE
    images = await store.images_for_job(job.id)
    assert [i.index for i in images] == [0, 1]
    for rec in images:
        raw = Path(rec.path).read_bytes()
        assert hashlib.sha256(raw).hexdigest() == rec.sha256
        assert Path(rec.path).parent == settings.images_dir / job.id
        meta = provenance.read_metadata(raw)
        assert meta["ai_generated"] and meta["parameters"].startswith("a lighthouse at dusk")
        assert meta["imagine_bot"]["job_id"] == job.id
        mark = rec.moderation["watermark"]
        assert mark["payload"] == watermark.payload_for(job.seq, rec.index).hex()
        # 64 px: recorded as marked only when the mark really reads back.
        assert (rec.watermark_payload is not None) == mark["verified"]
        if not mark["verified"]:
            assert "recorded as unmarked" in mark["note"]
        assert rec.moderation["nsfw"]["action"] == "allow"
    grid = Path(job.grid_path)
    assert grid.name == "grid.png" and Image.open(grid).size == (128, 64)
    # The grid is the delivered files tiled (their marks, however weak at 64 px), not re-marked.
    delivered = make_grid([Image.open(rec.path).convert("RGB") for rec in images])
    assert np.array_equal(np.asarray(Image.open(grid).convert("RGB")), np.asarray(delivered))
    grid_meta = provenance.read_metadata(grid.read_bytes())["imagine_bot"]
    assert grid_meta["watermark_payload"] is None
    assert grid_meta["tile_watermark_payloads"] == [rec.watermark_payload for rec in images]


async def test_blocked_image_never_leaves_and_is_audited(tiny_engine, tiny_settings, tmp_path, store):
    settings = settings_for(tiny_settings, tmp_path)

    def block(image, policy, *, nsfw_channel):
        return Decision("block", ("nsfw_image",), ("FEMALE_BREAST_EXPOSED 0.91",), "image shows nudity")

    post = PostProcessor(settings, store=store, loop=asyncio.get_running_loop(), check_image=block)
    job = await run_on_worker(Worker(store, tiny_engine, settings, postprocess=post), store)
    assert job.status == JobStatus.BLOCKED and "image shows nudity" in job.error
    assert await store.images_for_job(job.id) == []
    assert not (settings.images_dir / job.id).exists()
    async with store.db.execute("SELECT stage, action, user_id FROM audit_log WHERE job_id = ?", (job.id,)) as cur:
        rows = [tuple(r) for r in await cur.fetchall()]
    assert rows == [("output_image", "block", 3), ("output_image", "block", 3)]


def photo_result() -> GenerationResult:
    images = [Image.fromarray(data.astronaut()).resize((320, 320))]
    req = GenerationRequest("portrait", width=320, height=320, steps=4, seed=9, count=1)
    return GenerationResult(images, req.seeds, req, 320, 320, "m")


async def processed(store: Store, settings: Settings, job_id: str, **post_kw) -> tuple[Job, Image.Image, dict]:
    req = photo_result().request
    job = await store.add_job(
        Job(id=job_id, user_id=3, kind=JobKind.IMAGINE, params=req.to_params(), est_cost=1.0,
            guild_id=5, channel_id=6, delivery={"nsfw_channel": True})
    )
    post = PostProcessor(settings, store=store, loop=asyncio.get_running_loop(), **post_kw)
    out = await asyncio.to_thread(post, job, photo_result())
    assert out.grid_path is None  # one image: no grid
    (image,) = out.images
    return job, Image.open(image.path).convert("RGB"), image.moderation


async def test_policy_label_and_spoiler(store, tmp_path):
    settings = Settings(data_dir=tmp_path, provenance={"c2pa": False})
    seen = []

    def spoiler(image, policy, *, nsfw_channel):
        seen.append(nsfw_channel)
        return Decision("spoiler", ("nsfw_image",), ("BUTTOCKS_EXPOSED 0.6",), "nudity")

    _, plain, mod = await processed(store, settings, "plain00001", check_image=spoiler)
    assert mod["spoiler"] is True and mod["nsfw"]["action"] == "spoiler" and seen == [True]
    assert mod["watermark"]["verified"] and mod["watermark"]["psnr"] >= 40

    await save_policy(store, 5, None, Policy(ai_label=True, include_prompt_in_metadata=False), 1)
    job, labelled, _ = await processed(store, settings, "label00001", check_image=spoiler)
    corner = (np.asarray(labelled)[-40:, -40:].astype(int) - np.asarray(plain)[-40:, -40:]).__abs__()
    rest = (np.asarray(labelled)[:200, :200].astype(int) - np.asarray(plain)[:200, :200]).__abs__()
    assert corner.mean() > 10 > 3 > rest.mean()  # the badge is there, the rest is the same
    found = watermark.detect(labelled, key_for_settings(settings))  # the instance's own key
    assert found.valid and found.payload == watermark.payload_for(job.seq, 0)
    raw = (settings.images_dir / job.id / "0.png").read_bytes()
    assert b"portrait" not in raw  # the guild policy left the prompt out
    async with store.db.execute("SELECT COUNT(*) FROM audit_log WHERE stage = 'output_image'") as cur:
        assert (await cur.fetchone())[0] == 2  # one spoiler entry per job
    assert json.loads(json.dumps(mod))  # what the store keeps is JSON
