"""The /describe captioner without Discord: the tiny random model, the padding of repeated
captions, the aspect suffix, a model that cannot load, and the worker's between-jobs turn."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from core.config import Settings
from core.store import Store
from generation.describe import (
    Captioner,
    CaptionerUnavailable,
    LazyCaptioner,
    aspect_suffix,
    build_tiny_captioner,
    clean,
)
from generation.worker import Worker


def test_tiny_captioner_gives_four_distinct_printable_deterministic_suggestions() -> None:
    picture = Image.new("RGB", (120, 80), (10, 200, 90))
    first = build_tiny_captioner().suggestions(picture)
    assert len(first) == 4 and len(set(first)) == 4
    assert all(s.isprintable() and s.strip() and s.endswith("--ar 3:2") for s in first)
    assert build_tiny_captioner().suggestions(picture) == first


class _Parrot:
    """A model that always says the same thing: the captioner must still give four."""

    def generate(self, **kwargs: Any) -> torch.Tensor:
        rows = kwargs.get("num_return_sequences", 1)
        return torch.zeros((rows, 3), dtype=torch.long)


class _Words:
    def __call__(self, images: Any, return_tensors: str) -> dict[str, torch.Tensor]:
        return {"pixel_values": torch.zeros((1, 3, 8, 8))}

    def batch_decode(self, ids: Any, skip_special_tokens: bool) -> list[str]:
        return ["a cat\x00 --seed 1"] * len(ids)


def test_repeated_captions_are_padded_to_four_distinct_ones() -> None:
    words = _Words()
    captions = Captioner(_Parrot(), words, words).captions(Image.new("RGB", (8, 8)))
    assert len(set(captions)) == 4
    assert captions[0] == "a cat seed 1", "no control characters, no smuggled parameters"


@pytest.mark.parametrize(
    ("size", "suffix"),
    [((1920, 1080), "--ar 16:9"), ((64, 64), "--ar 1:1"), ((600, 900), "--ar 2:3"),
     ((1000, 760), "--ar 4:3")],
)
def test_aspect_suffix_snaps_to_a_common_ratio(size: tuple[int, int], suffix: str) -> None:
    assert aspect_suffix(*size) == suffix


def test_clean_keeps_one_printable_line() -> None:
    assert clean("  two\ncats\t on a\u200b sofa ") == "two cats on a sofa"


def test_a_captioner_that_cannot_load_says_how_to_enable_it(tmp_path: Path) -> None:
    missing = LazyCaptioner(str(tmp_path / "nowhere"))
    with pytest.raises(CaptionerUnavailable, match="model.captioner"):
        missing.get()
    with pytest.raises(CaptionerUnavailable, match="could not be loaded"):
        missing.get()  # remembered: no second attempt right away
    for off in ("off", "", " OFF "):
        with pytest.raises(CaptionerUnavailable, match="switched off"):
            LazyCaptioner(off).check_enabled()


async def test_run_between_jobs_takes_the_gpu_threads_turn(
    tiny_engine: Any, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, model={"name": "tiny", "device": "cpu"})
    async with await Store.open(settings.db_path) as store:
        worker = Worker(store, tiny_engine, settings)
        assert await worker.run_between_jobs(lambda: 7) == 7  # not started: a plain thread
        await worker.start()
        try:
            name = await worker.run_between_jobs(lambda: threading.current_thread().name)
            assert name.startswith("imagine-gpu")

            def fails() -> None:
                raise ValueError("caption failed")

            with pytest.raises(ValueError, match="caption failed"):
                await worker.run_between_jobs(fails)
            assert await worker.run_between_jobs(lambda: "still serving") == "still serving"
        finally:
            await worker.stop()


async def test_retention_sweeps_old_suggestions_with_the_results(tmp_path: Path) -> None:
    from core import retention

    settings = Settings(data_dir=tmp_path, retention={"results_days": 1})
    async with await Store.open(settings.db_path) as store:
        row = await store.add_describe(user_id=1, guild_id=2, channel_id=3, suggestions=["a", None])
        assert (await store.get_describe(row.id)).suggestions == ["a", None]
        swept = await retention.sweep(store, settings, now=row.created_at + 0.5 * retention.DAY_S)
        assert swept.describes == 0
        swept = await retention.sweep(store, settings, now=row.created_at + 2 * retention.DAY_S)
        assert swept.describes == 1 and await store.get_describe(row.id) is None
