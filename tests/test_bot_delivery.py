"""Delivery formatting and file handling, without Discord: sizes, spoilers, blocked images, text."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot import delivery, result_files
from bot.progress import Throttle, progress_text, queue_text
from core.jobs import ImageRecord, Job, JobKind, JobStatus


def _noise_png(path: Path, side: int = 512) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(path)
    return path


def _image(path: Path, index: int, **moderation: object) -> ImageRecord:
    return ImageRecord(
        id=index,
        job_id="j",
        index=index,
        seed=100 + index,
        path=str(path),
        width=64,
        height=64,
        sha256=None,
        watermark_payload=None,
        moderation=dict(moderation),
    )


def _job(**kw: object) -> Job:
    base: dict = dict(
        id="abc123",
        user_id=11,
        kind=JobKind.IMAGINE,
        params={"prompt": "a fox"},
        est_cost=1.0,
        status=JobStatus.DONE,
    )
    base.update(kw)
    return Job(**base)


def test_small_file_is_sent_untouched(tmp_path: Path) -> None:
    path = _noise_png(tmp_path / "a.png", 64)
    out = result_files.fit_to_limit(path, 10 * 2**20, stem="SPOILER_x")
    assert out.data == path.read_bytes()
    assert out.filename == "SPOILER_x.png"


def test_large_file_is_reencoded_under_the_limit(tmp_path: Path) -> None:
    path = _noise_png(tmp_path / "big.png", 512)
    limit = 60_000
    assert path.stat().st_size > limit
    out = result_files.fit_to_limit(path, limit)
    assert len(out.data) <= limit
    assert out.filename.endswith((".webp", ".jpg"))
    Image.open(io.BytesIO(out.data)).load()  # a real image


def test_blocked_image_never_leaves_and_grid_is_withheld(tmp_path: Path) -> None:
    imgs = [_image(_noise_png(tmp_path / f"{i}.png", 32), i) for i in range(4)]
    imgs[2] = _image(Path(imgs[2].path), 2, action="block")
    job = _job(grid_path=str(_noise_png(tmp_path / "grid.png", 64)))
    files = result_files.choose_files(job, imgs, 10 * 2**20)
    assert [f.filename for f in files] == ["abc123_1.png", "abc123_2.png", "abc123_4.png"]
    text = delivery.result_content(job, None, imgs)
    assert "102" not in text and "1 image was withheld" in text


def test_one_spoilered_image_spoilers_the_grid(tmp_path: Path) -> None:
    imgs = [_image(_noise_png(tmp_path / f"{i}.png", 32), i) for i in range(4)]
    imgs[1] = _image(Path(imgs[1].path), 1, action="spoiler")
    job = _job(grid_path=str(_noise_png(tmp_path / "grid.png", 64)))
    files = result_files.choose_files(job, imgs, 10 * 2**20)
    assert [f.filename for f in files] == ["SPOILER_abc123_grid.png"]


def test_content_names_prompt_seeds_parameters_and_author() -> None:
    job = _job(delivery={"prompt": "a fox", "summary": "--ar 16:9 --seed 100"})
    imgs = [_image(Path("x"), i) for i in range(2)]
    text = delivery.result_content(job, None, imgs)
    assert text.startswith("**a fox**")
    assert "<@11>" in text and "seeds 100, 101" in text and "--ar 16:9" in text
    assert "abc123" in text


def test_show_text_gives_the_job_s_gpu_energy_or_says_not_measured() -> None:
    imgs = [_image(Path("x"), 0)]
    assert "GPU energy" not in delivery.result_content(_job(), None, imgs)  # a delivery
    shown = delivery.result_content(_job(), None, imgs, energy=True)  # /show
    assert "GPU energy: not measured" in shown
    shown = delivery.result_content(_job(energy_joules=9.0), None, imgs, energy=True)
    assert "GPU energy: 9.0 J" in shown and "not measured" not in shown


def test_derived_job_says_whose_image_it_builds_on() -> None:
    parent = _job(id="parent1", user_id=1)
    child = _job(
        id="child1",
        user_id=2,
        kind=JobKind.VARIATION,
        parent_job_id="parent1",
        parent_image_index=1,
        delivery={"strong": True},
    )
    assert delivery.derived_line(child, parent) == "Variation (strong) of <@1>'s image 2 by <@2>"
    up = _job(
        id="up1", user_id=2, kind=JobKind.UPSCALE, parent_job_id="parent1", parent_image_index=0
    )
    assert delivery.derived_line(up, parent) == "Upscale of <@1>'s image 1 by <@2>"


def test_content_fits_discords_2000_characters() -> None:
    job = _job(delivery={"prompt": "x" * 5000, "summary": "--no " + "y" * 1000})
    text = delivery.result_content(job, None, [_image(Path("x"), 0)])
    assert len(text) <= 2000
    assert text.endswith("`") or "seed" in text


def test_failure_text_carries_the_reason() -> None:
    job = _job(status=JobStatus.BLOCKED, error="the image was flagged as explicit")
    assert "blocked" in delivery.failure_content(job)
    assert "flagged as explicit" in delivery.failure_content(job)


def test_token_lifetime_switch() -> None:
    now = time.time()
    alive = {"token": "t", "application_id": 1, "created_at": now - 60}
    assert delivery.token_alive(alive, now)
    assert not delivery.token_alive({**alive, "created_at": now - 15 * 60}, now)
    assert not delivery.token_alive({"created_at": now}, now)


def test_throttle_allows_one_edit_per_interval() -> None:
    t = [0.0]
    throttle = Throttle(1.5, clock=lambda: t[0])
    assert throttle.ready("a")
    assert not throttle.ready("a")
    assert throttle.ready("b"), "jobs are throttled independently"
    t[0] = 1.4
    assert not throttle.ready("a")
    t[0] = 1.6
    assert throttle.ready("a")


@pytest.mark.parametrize(
    ("pos", "eta", "words"),
    [(3, 42.0, "position 3, about 42 s"), (1, 200.0, "about 3 min"), (None, None, "Queued")],
)
def test_queue_text(pos, eta, words) -> None:
    assert words in queue_text(pos, eta)


def test_progress_text() -> None:
    assert "step 2 of 4" in progress_text(2, 4)


async def test_no_progress_edit_after_the_result() -> None:
    from bot.progress import ProgressEditor

    editor = ProgressEditor(None, 0.0)  # type: ignore[arg-type]
    job = _job(delivery={"token": "t", "application_id": 1, "created_at": time.time()})
    await editor.finish(job.id)
    assert not editor.would_edit(job)
    assert not editor.update(job, "step 3 of 4", force=True)
    dead = _job(id="old", delivery={"token": "t", "application_id": 1, "created_at": 0.0})
    assert not editor.update(dead, "Queued"), "an expired token is never used"


async def test_no_progress_edit_starts_once_the_client_closes() -> None:
    """The worker may report a step while the bot shuts down; its HTTP session is gone then."""
    from bot.progress import ProgressEditor

    editor = ProgressEditor(None, 0.0)  # type: ignore[arg-type]
    job = _job(delivery={"token": "t", "application_id": 1, "created_at": time.time()})
    assert editor.would_edit(job)
    await editor.close()
    assert not editor.would_edit(job)
    assert not editor.update(job, "step 2 of 2", force=True)


async def test_progress_editor_sends_one_edit_per_interval_and_keeps_order() -> None:
    from bot.progress import ProgressEditor

    sent: list[str] = []

    class Recording(ProgressEditor):
        async def _edit(self, job, content, preview):  # the HTTP call, recorded instead
            await asyncio.sleep(0)
            sent.append(content)

    now = [0.0]
    editor = Recording(None, 1.5)  # type: ignore[arg-type]
    editor.throttle.clock = lambda: now[0]
    job = _job(delivery={"token": "t", "application_id": 1, "created_at": time.time()})
    for step in range(1, 21):  # 20 steps in the same instant
        editor.update(job, f"step {step} of 20")
        await asyncio.sleep(0)
    now[0] = 1.6
    await editor.settle(job.id)
    editor.update(job, "step 20 of 20 (late)")
    await editor.finish(job.id)
    editor.update(job, "after the result")
    await editor.close()
    assert sent == ["step 1 of 20", "step 20 of 20 (late)"]
