"""The deepfake rule after generation, through the real ``PostProcessor``, NudeNet and SQLite.

A prompt that names a real person with no photo words passes the prompt gate (balanced level),
so the only thing between it and a realistic fake is the output check: NudeNet's face detector
on the generated image. A real photo (scikit-image's astronaut, where NudeNet sees a face)
stands in for what the model painted; coffee beans stand in for a picture with no face.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from PIL import Image
from skimage import data

from core.config import Settings
from core.jobs import Job, JobBlocked, JobKind
from core.store import Store
from generation.engine import GenerationResult
from generation.request import GenerationRequest
from moderation.postprocess import PostProcessor
from moderation.prompt_gate import check_prompt


@pytest.fixture
async def store(tmp_path: Path):
    s = await Store.open(tmp_path / "imagine.db")
    yield s
    await s.close()


def _result(prompt: str, picture: Image.Image) -> GenerationResult:
    req = GenerationRequest(prompt, width=512, height=512, steps=4, seed=9, count=1)
    return GenerationResult([picture], req.seeds, req, 512, 512, "m")


async def _process(store: Store, tmp_path: Path, job_id: str, prompt: str, picture: Image.Image):
    settings = Settings(data_dir=tmp_path, provenance={"c2pa": False})
    result = _result(prompt, picture)
    job = await store.add_job(
        Job(
            id=job_id,
            user_id=3,
            kind=JobKind.IMAGINE,
            params=result.request.to_params(),
            est_cost=1.0,
            guild_id=5,
            channel_id=6,
            delivery={},
        )
    )
    post = PostProcessor(settings, store=store, loop=asyncio.get_running_loop())
    return job, await asyncio.to_thread(post, job, result)


async def _audit(store: Store, job_id: str) -> list[tuple]:
    async with store.db.execute(
        "SELECT stage, action, categories FROM audit_log WHERE job_id = ?", (job_id,)
    ) as cur:
        return [tuple(r) for r in await cur.fetchall()]


def _face() -> Image.Image:
    return Image.fromarray(data.astronaut())


async def test_a_named_person_with_a_realistic_face_is_blocked_after_generation(store, tmp_path):
    prompt = "Taylor Swift at the beach"
    assert not check_prompt(prompt).blocked, "the prompt gate lets it through: no photo words"
    with pytest.raises(JobBlocked, match="real person"):
        await _process(store, tmp_path, "fake000001", prompt, _face())
    [(stage, action, categories)] = await _audit(store, "fake000001")
    assert (stage, action) == ("output_image", "block") and "real_person" in categories
    assert not (tmp_path / "images" / "fake000001").exists(), "nothing of it is kept"


async def test_a_clear_style_or_no_face_is_allowed(store, tmp_path):
    _, styled = await _process(
        store, tmp_path, "lego000001", "Taylor Swift at the beach as a lego figure", _face()
    )
    assert [i.moderation["nsfw"]["action"] for i in styled.images] == ["allow"]
    coffee = Image.fromarray(data.coffee()).resize((512, 512))
    _, faceless = await _process(store, tmp_path, "cafe000001", "Taylor Swift at the beach", coffee)
    assert [i.moderation["nsfw"]["action"] for i in faceless.images] == ["allow"]
    _, nobody = await _process(store, tmp_path, "anon000001", "a woman at the beach", _face())
    assert [i.moderation["nsfw"]["action"] for i in nobody.images] == ["allow"]
    assert await _audit(store, "lego000001") == []
