"""What the engine hands back: results, progress events and their cheap latent previews.

Why a module of its own: the worker, the remote dispatcher and the engine's helpers (batching,
upscaling) all use these types; keeping them out of ``engine.py`` lets those helpers live in
their own modules without importing the engine.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from core.grid import make_grid
from generation.chaos import image_guidance
from generation.request import GenerationRequest, infotext

# Fixed latent -> RGB projections (least-squares fits, as ComfyUI and A1111 use them), one per
# latent space: previews without running the VAE. SDXL's VAE has its own latent space, so SD 1.x
# factors give it the wrong colours.
_LATENT_RGB = {
    "sd": (
        torch.tensor(
            [
                [0.298, 0.207, 0.208],
                [0.187, 0.286, 0.173],
                [-0.158, 0.189, 0.264],
                [-0.184, -0.271, -0.473],
            ]
        ),
        torch.zeros(3),
    ),
    "sdxl": (
        torch.tensor(
            [
                [0.3651, 0.4232, 0.4341],
                [-0.2533, -0.0042, 0.1068],
                [0.1076, 0.1111, -0.0362],
                [-0.3165, -0.2492, -0.2188],
            ]
        ),
        torch.tensor([0.1084, -0.0175, -0.0011]),
    ),
}


def latent_space(family: str) -> str:
    """Which latent -> RGB projection a model family's previews use."""
    return "sdxl" if family.startswith("sdxl") else "sd"


@dataclass(frozen=True)
class ProgressEvent:
    step: int  # steps done, 1..total
    total: int
    latents: torch.Tensor | None = field(default=None, repr=False)  # CPU copy, for ``preview``
    request_index: int = 0  # which of the co-batched requests this event is about
    size: tuple[int, int] | None = None  # final image size the preview is scaled to
    space: str = "sd"  # latent space, for the preview's colours (``latent_space``)

    @functools.cached_property
    def preview(self) -> Image.Image | None:
        """A cheap RGB preview, made only when asked for: a bot that edits its message every
        1.5 s reads a few of them, and making one per step slowed small jobs by ~7 %."""
        if self.latents is None:
            return None
        return latents_preview(self.latents, self.size, space=self.space)


@dataclass
class GenerationResult:
    images: list[Image.Image]
    seeds: list[int]
    request: GenerationRequest
    width: int
    height: int
    model: str
    timings: dict[str, float] = field(default_factory=dict)

    @functools.cached_property
    def grid(self) -> Image.Image:
        """The images tiled, made when first read: off the GPU thread, and not at all by the
        bot's post-processing (it tiles the watermarked images instead)."""
        return make_grid(self.images)

    def infotext(self, index: int = 0) -> str:
        """A1111 "parameters" text for image ``index`` (its own seed, and with ``--chaos`` its own
        guidance: the CFG scale it was really made with)."""
        req = self.request.replace(guidance=image_guidance(self.request, index))
        return infotext(req, self.seeds[index], self.model, (self.width, self.height))

    def metadata(self) -> dict[str, Any]:
        """JSON-safe description of what was made and how long it took."""
        req = self.request
        canvas = {"canvas": req.canvas} if req.canvas is not None else {}
        return {
            "kind": req.kind,
            **canvas,
            "prompt": req.prompt,
            "negative_prompt": req.negative_prompt,
            "seeds": list(self.seeds),
            "width": self.width,
            "height": self.height,
            "steps": req.steps,
            "guidance": req.guidance,
            "guidance_per_image": [image_guidance(req, i) for i in range(len(self.images))],
            "chaos": req.chaos,
            "tile": req.tile,
            "scheduler": req.scheduler,
            "strength": req.strength if req.init_image is not None else None,
            "count": len(self.images),
            "model": self.model,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }


class Throttled:
    """A progress callback that only wants the first step, the last, and one per interval."""

    def __init__(self, progress: Callable[[ProgressEvent], None], interval_s: float) -> None:
        self.progress = progress
        self.interval_s = interval_s
        self.last = float("-inf")

    def due(self, step: int, total: int) -> bool:
        now = time.monotonic()
        if step <= 1 or step >= total or now - self.last >= self.interval_s:
            self.last = now
            return True
        return False

    def __call__(self, event: ProgressEvent) -> None:
        self.progress(event)


def progress_due(progress: Callable[[ProgressEvent], None], step: int, total: int) -> bool:
    """Asked once per step, before building the step's events (their latents copy is the cost)."""
    return progress.due(step, total) if isinstance(progress, Throttled) else True


def latents_preview(
    latents: torch.Tensor, size: tuple[int, int] | None = None, *, space: str = "sd"
) -> Image.Image:
    """A cheap RGB preview of one latent (C, H, W) via a fixed linear map, no VAE.

    ``size`` (width, height) scales it to the final image size so it can replace the image in place.
    """
    lat = latents.detach().float().cpu()
    factors, bias = _LATENT_RGB[space]
    if lat.shape[0] == factors.shape[0]:
        rgb = torch.einsum("chw,cr->hwr", lat, factors) + bias
    else:  # other latent spaces: show the first channels as they are
        rgb = lat.repeat(3, 1, 1)[:3].permute(1, 2, 0)
    arr = ((rgb.clamp(-1, 1) + 1) * 127.5).to(torch.uint8).numpy()
    img = Image.fromarray(np.ascontiguousarray(arr), "RGB")
    return img.resize(size, Image.Resampling.BILINEAR) if size else img
