"""Image-to-image preparation: a variation's request, and sizing a user's image to a request.

Why apart from ``engine.py``: these are pure functions of a request, an image and the limits;
the engine only validates what they build, and the batching code fits init images with them.
"""

from __future__ import annotations

import math
import secrets
from typing import Any

from PIL import Image

from generation.request import MAX_SEED, GenerationRequest, ModelDefaults

SUBTLE_STRENGTH = 0.35
STRONG_STRENGTH = 0.65


def variation_of(
    parent: GenerationRequest,
    image: Image.Image,
    *,
    strong: bool,
    seed: int | None,
    defaults: ModelDefaults,
    limits: Any,
) -> GenerationRequest:
    """The not yet validated request of ``Engine.variation_request``; ``limits`` is
    ``settings.model``. Enough steps that the strength leaves at least one to run."""
    strength = STRONG_STRENGTH if strong else SUBTLE_STRENGTH
    steps = parent.steps or defaults.steps
    steps = max(steps, math.ceil(1 / strength))
    width, height = fit_budget(image.width, image.height, limits)
    return parent.replace(
        init_image=image.convert("RGB"),
        strength=strength,
        steps=steps,
        width=width,
        height=height,
        aspect_ratio=None,
        seed=seed if seed is not None else secrets.randbelow(MAX_SEED + 1),
        kind="variation",
    )


def fit_budget(width: int, height: int, limits: Any) -> tuple[int, int]:
    """Shrink (keeping the ratio) to the pixel budget: an upscaled image can still be varied."""
    scale = min(
        1.0,
        math.sqrt(limits.max_pixels / (width * height)),
        limits.max_side / max(width, height),
    )
    return max(32, int(width * scale) // 8 * 8), max(32, int(height * scale) // 8 * 8)


def fit_init_image(image: Image.Image, width: int, height: int) -> Image.Image:
    """``image`` in RGB at the request's size: every row of one pipeline call has one size."""
    image = image.convert("RGB")
    return (
        image
        if image.size == (width, height)
        else image.resize((width, height), Image.Resampling.LANCZOS)
    )
