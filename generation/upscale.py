"""The 2x upscale: a Lanczos resize, then low-strength img2img over equal overlapping tiles.

Why apart from ``engine.py``: tiling, blending and the memory fallbacks are a feature of their
own; the engine lends it only its batch runner, so this module never imports the engine.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from core.errors import OutOfMemory, UserInputError
from generation.batching import chunks
from generation.request import MAX_SEED, GenerationRequest, ModelDefaults, resolve
from generation.results import GenerationResult, ProgressEvent

log = logging.getLogger(__name__)

UPSCALE_STRENGTH = 0.3
UPSCALE_FACTOR = 2
TILE_OVERLAP = 32

Progress = Callable[[ProgressEvent], None]
Cancel = Callable[[], bool]
# ``Engine._run_batch``: (indices, requests, progress, should_cancel) -> one result per index.
RunBatch = Callable[
    [list[int], list[GenerationRequest], Progress | None, Cancel | None], list[GenerationResult]
]


def upscale_image(
    image: Image.Image,
    parent: GenerationRequest,
    *,
    run_batch: RunBatch,
    defaults: ModelDefaults,
    limits: Any,
    model: str,
    seed: int | None = None,
    tile_size: int | None = None,
    progress: Progress | None = None,
    should_cancel: Cancel | None = None,
) -> GenerationResult:
    """``Engine.upscale``, given the engine's batch runner rather than the engine, so this
    module never imports it; ``limits`` is ``settings.model``, ``model`` the model's name.

    Falls back to the plain Lanczos result when the device runs out of memory, so the
    button still gives the user a bigger image.
    """
    started = time.perf_counter()
    width, height = image.width * UPSCALE_FACTOR, image.height * UPSCALE_FACTOR
    width, height = width // 8 * 8, height // 8 * 8
    if max(width, height) > limits.max_side:
        raise UserInputError(
            f"image is {image.width}x{image.height}; a 2x upscale would be {width}x{height}, "
            f"past the {limits.max_side} px limit"
        )
    big = image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    steps = parent.steps or defaults.steps
    steps = max(steps, math.ceil(1 / UPSCALE_STRENGTH))
    base = parent.replace(
        count=1, kind="upscale", strength=UPSCALE_STRENGTH, steps=steps, aspect_ratio=None
    )
    base = base.replace(seed=seed if seed is not None else secrets.randbelow(MAX_SEED + 1))
    tile = int(tile_size or max(defaults.size, 64))
    corners, tile_w, tile_h = _corners(big.size, tile)
    reqs = _tile_requests(big, base, corners, (tile_w, tile_h), defaults, limits)
    fallback = None
    try:
        refined = _refine_tiles(reqs, run_batch, limits.max_batch, progress, should_cancel)
        out = _blend(big.size, corners, (tile_w, tile_h), refined)
    except OutOfMemory:
        log.warning(
            "upscale of %dx%d ran out of memory; returning the Lanczos resize", width, height
        )
        out, fallback = big, "lanczos"
    final_req = base.replace(width=width, height=height, init_image=image.convert("RGB"))
    timings = {"total_s": time.perf_counter() - started}
    if fallback:
        timings["lanczos_fallback"] = 1.0
    return GenerationResult(
        images=[out],
        seeds=[base.seed],
        request=final_req,
        width=width,
        height=height,
        model=model,
        timings=timings,
    )


def _validate_tile(
    base: GenerationRequest,
    image: Image.Image,
    width: int,
    height: int,
    defaults: ModelDefaults,
    limits: Any,
) -> GenerationRequest:
    # The upscale target may exceed the per-request pixel budget (tiles keep memory bounded),
    # so only the side limit applies here.
    return resolve(
        base.replace(init_image=image, width=width, height=height),
        defaults,
        limits.model_copy(update={"max_pixels": max(limits.max_pixels, width * height)}),
    )


def _tile_requests(
    big: Image.Image,
    base: GenerationRequest,
    corners: list[tuple[int, int]],
    tile_size: tuple[int, int],
    defaults: ModelDefaults,
    limits: Any,
) -> list[GenerationRequest]:
    """One img2img request per tile. Tile ``k`` uses seed ``seed + k``: one noise pattern
    repeated over every tile would show as a texture."""
    tile_w, tile_h = tile_size
    return [
        _validate_tile(
            base.replace(seed=(base.seed + k) % (MAX_SEED + 1)),
            big.crop((left, top, left + tile_w, top + tile_h)),
            tile_w,
            tile_h,
            defaults,
            limits,
        )
        for k, (top, left) in enumerate(corners)
    ]


def _corners(size: tuple[int, int], tile: int) -> tuple[list[tuple[int, int]], int, int]:
    """(top, left) of every tile, row by row, and the tiles' width and height."""
    width, height = size
    xs, tile_w = tile_layout(width, tile)
    ys, tile_h = tile_layout(height, tile)
    return [(top, left) for top in ys for left in xs], tile_w, tile_h


def _refine_tiles(
    reqs: list[GenerationRequest],
    run_batch: RunBatch,
    max_batch: int,
    progress: Progress | None,
    should_cancel: Cancel | None,
) -> list[Image.Image]:
    """Refine equal, evenly spread tiles in batched img2img calls, one by one where a batch
    runs out of memory."""
    groups = chunks(list(range(len(reqs))), reqs, max_batch)
    refined: list[Image.Image] = []
    for done, chunk in enumerate(groups):

        def chunk_progress(event: ProgressEvent, done: int = done, lead: int = chunk[0]) -> None:
            if progress is not None and event.request_index == lead:
                total = event.total * len(groups)
                progress(ProgressEvent(done * event.total + event.step, total))

        alone = False
        try:
            results = run_batch(chunk, reqs, chunk_progress, should_cancel)
        except OutOfMemory:
            if len(chunk) == 1:
                raise
            alone = True
        if alone:  # after the except block, so the failed batch's memory is free
            log.warning("a batch of %d upscale tiles ran out of memory; one by one", len(chunk))
            results = [run_batch([i], reqs, chunk_progress, should_cancel)[0] for i in chunk]
        refined.extend(r.images[0] for r in results)
    return refined


def _blend(
    size: tuple[int, int],
    corners: list[tuple[int, int]],
    tile_size: tuple[int, int],
    refined: list[Image.Image],
) -> Image.Image:
    """The refined tiles put back together with linear ramps over the overlaps, so no seams
    show."""
    tile_w, tile_h = tile_size
    if len(corners) == 1:
        return refined[0]
    width, height = size
    acc = np.zeros((height, width, 3), np.float64)
    weight = np.zeros((height, width, 1), np.float64)
    mask = _ramp(tile_w, tile_h)
    for (top, left), img in zip(corners, refined, strict=True):
        acc[top : top + tile_h, left : left + tile_w] += np.asarray(img, np.float64) * mask
        weight[top : top + tile_h, left : left + tile_w] += mask
    return Image.fromarray(np.clip(acc / np.maximum(weight, 1e-8), 0, 255).round().astype(np.uint8))


def tile_layout(length: int, tile: int) -> tuple[list[int], int]:
    """Starts and size of the fewest equal tiles that cover ``length`` along one side.

    Each tile is at most ``tile`` plus the overlap (a multiple of 8 for the VAE), neighbours
    overlap by at least ``TILE_OVERLAP`` px, and the tiles are spread evenly: a 1024 px side
    at a 512 px model takes two 528 px tiles (work ~1.06x the image), not three of 768 px.
    """
    if length <= tile + TILE_OVERLAP:
        return [0], length
    count = math.ceil((length - TILE_OVERLAP) / tile)
    size = math.ceil((length + (count - 1) * TILE_OVERLAP) / count / 8) * 8
    size = min(size, length)
    return [round(i * (length - size) / (count - 1)) for i in range(count)], size


def _ramp(width: int, height: int) -> np.ndarray:
    """Blend weights: 1 in the middle, falling linearly to near 0 over the overlap at each edge."""

    def axis(n: int) -> np.ndarray:
        ramp = np.minimum(np.arange(n) + 1, np.arange(n)[::-1] + 1).astype(np.float64)
        return np.clip(ramp / TILE_OVERLAP, 1e-3, 1.0)

    return (axis(height)[:, None] * axis(width)[None, :])[..., None]
