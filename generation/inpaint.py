"""The inpainting pipeline behind Zoom Out, Pan and Vary (Region).

Why apart from ``loading.py``: it is made only when the first canvas job runs. Without
``model.inpaint`` it is a view of the loaded model's own modules (no extra memory; diffusers'
inpainting pipeline re-noises and blends the kept latents every step for a 4-channel UNet);
with it, a dedicated 9-channel inpainting model is loaded the way the main model is.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from diffusers import (
    AutoPipelineForInpainting,
    DiffusionPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionXLInpaintPipeline,
)

from core.config import ModelSettings
from core.errors import UserInputError
from generation.loading import _load_from_source, is_sdxl

log = logging.getLogger(__name__)


def inpaint_view(txt2img: DiffusionPipeline) -> DiffusionPipeline:
    """An inpainting pipeline sharing ``txt2img``'s modules (SD 1.x/2.x and SDXL)."""
    extra = {"add_watermarker": False} if is_sdxl(txt2img) else {}
    pipe = AutoPipelineForInpainting.from_pipe(txt2img, **extra)
    _quiet(pipe)
    return pipe


def load_inpaint_model(
    cfg: ModelSettings, *, device: torch.device, dtype: torch.dtype
) -> DiffusionPipeline:
    """``cfg.inpaint`` on the main model's device and dtype, without a safety checker
    (moderation/ judges every image) or Stability's invisible watermark (ours is applied)."""
    assert cfg.inpaint is not None
    log.info("loading the inpainting model %s", cfg.inpaint)
    try:
        pipe = _load_from_source(
            cfg,
            dtype,
            name=cfg.inpaint,
            auto=AutoPipelineForInpainting,
            single=(StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline),
        )
    except (OSError, ValueError, KeyError) as exc:
        if isinstance(exc, UserInputError):
            raise
        raise UserInputError(
            f"could not load the inpainting model {cfg.inpaint!r} (model.inpaint): "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    pipe.to(device=device, dtype=dtype)
    if getattr(pipe, "safety_checker", None) is not None:
        pipe.safety_checker = None
    pipe.vae.enable_slicing()
    _quiet(pipe)
    return pipe


def _quiet(pipe: Any) -> None:
    pipe.set_progress_bar_config(disable=True)
    if getattr(pipe, "watermark", None) is not None:
        pipe.watermark = None
