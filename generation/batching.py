"""Co-batching helpers of the engine: one pipeline call's rows, chunks, callback and results.

Why apart from ``engine.py``: they hold no model state, only the bookkeeping that lets several
requests share one denoising call and still get, each, what it would have got alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from core.errors import JobCancelled
from generation.img2img import fit_init_image
from generation.outpaint import Canvas, build_canvas, composite
from generation.request import GenerationRequest
from generation.results import GenerationResult, ProgressEvent, progress_due


@dataclass
class BatchRows:
    """A co-batch flattened to one row per image: what the pipeline call takes."""

    prompts: list[str] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)
    generators: list[torch.Generator] = field(default_factory=list)
    owners: list[int] = field(default_factory=list)  # row -> position of its request in the batch
    init_images: list[Image.Image] = field(default_factory=list)
    masks: list[Image.Image] = field(default_factory=list)  # canvas rows: what to repaint
    canvases: dict[int, Canvas] = field(default_factory=dict)  # request position -> its canvas

    @classmethod
    def of(cls, batch: list[GenerationRequest], limits: Any = None) -> BatchRows:
        """``limits`` (``settings.model``) sizes pan canvases; needed when ``batch`` has any."""
        rows = cls()
        for pos, req in enumerate(batch):
            if req.canvas is not None:
                rows.canvases[pos] = build_canvas(req.init_image, req.canvas, limits)
            for seed in req.seeds:
                rows.prompts.append(req.prompt)
                rows.negatives.append(req.negative_prompt)
                # CPU generators: CUDA's random numbers differ between GPU models and torch
                # versions, the CPU's do not, so a seed remakes the same image on any machine
                # (diffusers' advice). Drawing the starting noise on the CPU costs microseconds.
                rows.generators.append(torch.Generator(device="cpu").manual_seed(seed))
                rows.owners.append(pos)
                if pos in rows.canvases:
                    canvas = rows.canvases[pos]
                    size = (req.width, req.height)
                    rows.init_images.append(canvas.image.resize(size, Image.Resampling.LANCZOS))
                    rows.masks.append(canvas.mask.resize(size, Image.Resampling.BILINEAR))
                elif req.init_image is not None:
                    rows.init_images.append(fit_init_image(req.init_image, req.width, req.height))
        return rows

    def finish(self, images: list[Image.Image]) -> list[Image.Image]:
        """The pipeline's images, canvas rows composited back over their canvas at full size."""
        return [
            composite(self.canvases[owner], image) if owner in self.canvases else image
            for image, owner in zip(images, self.owners, strict=True)
        ]


def chunks(indices: list[int], reqs: list[GenerationRequest], max_batch: int) -> list[list[int]]:
    """Split a compatible group so one call holds at most ``max_batch`` images (a lone big request still runs)."""
    out: list[list[int]] = []
    current: list[int] = []
    images = 0
    for i in indices:
        if current and images + reqs[i].count > max_batch:
            out.append(current)
            current, images = [], 0
        current.append(i)
        images += reqs[i].count
    if current:
        out.append(current)
    return out


def step_callback(
    indices: list[int],
    first: GenerationRequest,
    owners: list[int],
    progress: Callable[[ProgressEvent], None] | None,
    should_cancel: Callable[[], bool] | None,
    *,
    space: str,
) -> Callable[..., dict[str, Any]]:
    """The pipeline's ``callback_on_step_end``: progress events, then the cancel poll."""
    first_of = {pos: owners.index(pos) for pos in range(len(indices))}

    def on_step(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        # Report first, then poll: a cancel pressed while the step ran stops before the next.
        total = int(getattr(pipe, "num_timesteps", 0) or first.steps)
        if progress is not None and progress_due(progress, step + 1, total):
            latents = kwargs.get("latents")
            for pos, index in enumerate(indices):
                latent = (
                    latents[first_of[pos]].detach().to("cpu", copy=True)
                    if latents is not None
                    else None
                )
                progress(
                    ProgressEvent(
                        step=step + 1,
                        total=total,
                        latents=latent,
                        request_index=index,
                        size=(first.width, first.height),
                        space=space,
                    )
                )
        if should_cancel is not None and should_cancel():
            raise JobCancelled("cancelled")
        return kwargs

    return on_step


def batch_results(
    batch: list[GenerationRequest],
    owners: list[int],
    images: list[Image.Image],
    elapsed: float,
    model: str,
) -> list[GenerationResult]:
    """One result per request of the batch, each with its own images."""
    n_images = len(images)
    results = []
    for pos, req in enumerate(batch):
        mine = [img for img, owner in zip(images, owners, strict=True) if owner == pos]
        # A canvas request's images are its canvas's size, not the generation size.
        width, height = mine[0].size if req.canvas is not None else (req.width, req.height)
        results.append(
            GenerationResult(
                images=mine,
                seeds=req.seeds,
                request=req,
                width=width,
                height=height,
                model=model,
                timings={
                    "batch_s": elapsed,
                    "per_image_s": elapsed / n_images,
                    "batch_images": float(n_images),
                },
            )
        )
    return results
