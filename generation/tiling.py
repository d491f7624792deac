"""Seamless tiling (``--tile``): images that wrap around left/right and top/bottom.

Why padding and not a post-process: the edges of an image only wrap if the model sees them as
neighbours while it makes it. Every ``Conv2d`` of the UNet and the VAE pads circularly for the
duration of one pipeline call (``seamless``), so a convolution at the right edge reads the left
edge, and the denoised latents and the decoded pixels both wrap.

The one place diffusers pads by hand is ``Downsample2D`` with ``padding=0`` (the VAE encoder,
used by img2img: a variation of a tiled image): it adds a zero column and row on the right and
bottom with ``F.pad`` before a stride-2 conv. A pre-hook wraps those in first, circularly; the
zero pad then lands past what the conv reads, so the encoder wraps too. The UNet's downsamplers
pad in the conv itself (``padding=1``).

Limits: images above the engine's ``VAE_TILING_PIXELS`` decode in overlapping VAE tiles, whose
blending does not wrap at the image edges; an upscale (cut into tiles, ``generation/upscale.py``)
does not wrap either. A compiled UNet recompiles for the other padding mode once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.downsampling import Downsample2D
from torch import nn


@contextmanager
def seamless(pipe: Any, enabled: bool = True) -> Iterator[None]:
    """Circular padding in ``pipe``'s UNet and VAE inside the block, as before after it (also on
    an error or a cancel, which raise out of the pipeline call)."""
    if not enabled:
        yield
        return
    models = [pipe.unet, pipe.vae]
    convs = [m for model in models for m in model.modules() if isinstance(m, nn.Conv2d)]
    saved = [(conv, conv.padding_mode) for conv in convs]
    hooks = [
        m.register_forward_pre_hook(_wrap_bottom_right)
        for model in models
        for m in model.modules()
        if isinstance(m, Downsample2D) and m.use_conv and m.padding == 0
    ]
    try:
        for conv in convs:
            conv.padding_mode = "circular"
        yield
    finally:
        for conv, mode in saved:
            conv.padding_mode = mode
        for hook in hooks:
            hook.remove()


def _wrap_bottom_right(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The first column and row appended after the last: what ``F.pad(x, (0, 1, 0, 1))`` in
    ``Downsample2D.forward`` would have filled with zeros is the wrapped-around image."""
    hidden: torch.Tensor = args[0]
    return (F.pad(hidden, (0, 1, 0, 1), mode="circular"), *args[1:])
