"""Turning ``settings.model`` into a ready pipeline pair (text-to-image + image-to-image).

Accepts the built-in ``tiny`` model, a local diffusers folder, a single-file ``.safetensors`` /
``.ckpt`` checkpoint, or a Hugging Face hub id, and detects the family (SD1.x, SD2.x, SDXL,
Turbo) so requests get sensible defaults. Both pipelines share the *same* modules, so the
weights are in memory once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoPipelineForImage2Image,
    AutoPipelineForText2Image,
    DDIMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UniPCMultistepScheduler,
)

from generation.config import ModelSettings
from generation.errors import UserInputError
from generation.request import ModelDefaults
from generation.tiny import TINY_NAME, build_tiny_pipeline

log = logging.getLogger(__name__)

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")

# Scheduler name -> (class, extra config). Built fresh per run from the model's own config.
SCHEDULER_CLASSES: dict[str, tuple[type, dict[str, Any]]] = {
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "dpm++": (DPMSolverMultistepScheduler, {}),
    "dpm++_karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
    "ddim": (DDIMScheduler, {}),
    "unipc": (UniPCMultistepScheduler, {}),
    "lcm": (LCMScheduler, {}),
}


@dataclass
class LoadedModel:
    txt2img: DiffusionPipeline
    img2img: DiffusionPipeline
    defaults: ModelDefaults
    device: torch.device
    dtype: torch.dtype
    name: str


def pick_device(setting: str) -> torch.device:
    """``auto`` prefers CUDA, then Apple MPS, then CPU."""
    if setting == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise UserInputError("model.device is cuda but no CUDA GPU is visible; use auto or cpu")
    return torch.device(setting)


def pick_dtype(device: torch.device, setting: str) -> torch.dtype:
    """fp16 on GPUs (bf16 if asked), fp32 on CPU where half precision is slow or unsupported."""
    if setting != "auto":
        return getattr(torch, setting)
    return torch.float16 if device.type in ("cuda", "mps") else torch.float32


def detect_defaults(pipe: DiffusionPipeline, name: str) -> ModelDefaults:
    """Family defaults from the pipeline's own configs (and the name, for Turbo models)."""
    if name == TINY_NAME:
        return ModelDefaults(family="tiny", size=64, steps=4, guidance=5.0, scheduler="euler")
    is_xl = isinstance(pipe, StableDiffusionXLPipeline) or "XL" in type(pipe).__name__
    turbo = "turbo" in name.lower()
    vae_scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    native = int(pipe.unet.config.sample_size) * vae_scale
    if turbo:
        return ModelDefaults(
            family="sdxl-turbo" if is_xl else "sd-turbo",
            size=512,
            steps=2,
            guidance=0.0,
            scheduler="euler",
        )
    if is_xl:
        return ModelDefaults(
            family="sdxl", size=native or 1024, steps=30, guidance=5.0, scheduler="dpm++"
        )
    family = "sd2" if int(pipe.unet.config.cross_attention_dim) == 1024 else "sd1"
    return ModelDefaults(
        family=family, size=native or 512, steps=30, guidance=7.0, scheduler="dpm++"
    )


def _is_sdxl_checkpoint(path: Path) -> bool:
    """SDXL single files carry a second text encoder under ``conditioner.embedders.1``."""
    if path.suffix != ".safetensors":
        return False
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return any(k.startswith("conditioner.embedders.1") for k in f.keys())


def _load_from_source(cfg: ModelSettings, dtype: torch.dtype) -> DiffusionPipeline:
    path = Path(cfg.name).expanduser()
    if path.is_file():
        if path.suffix not in SINGLE_FILE_SUFFIXES:
            raise UserInputError(f"model file {path} must be a .safetensors or .ckpt checkpoint")
        cls = StableDiffusionXLPipeline if _is_sdxl_checkpoint(path) else StableDiffusionPipeline
        log.info("loading single-file checkpoint %s as %s", path, cls.__name__)
        return cls.from_single_file(str(path), torch_dtype=dtype)
    if path.is_dir():
        log.info("loading diffusers folder %s", path)
        return AutoPipelineForText2Image.from_pretrained(str(path), torch_dtype=dtype)
    if cfg.name.endswith(SINGLE_FILE_SUFFIXES) or cfg.name.startswith((".", "/", "~")):
        raise UserInputError(
            f"model {cfg.name} does not exist; give a hub id, a folder, a checkpoint file or tiny"
        )
    log.info(
        "loading %s from the Hugging Face hub (cache: %s)", cfg.name, cfg.cache_dir or "default"
    )
    kwargs: dict[str, Any] = {"torch_dtype": dtype, "cache_dir": cfg.cache_dir}
    if dtype == torch.float16:
        try:
            return AutoPipelineForText2Image.from_pretrained(cfg.name, variant="fp16", **kwargs)
        except (OSError, ValueError):
            log.info("no fp16 variant of %s; loading the default weights", cfg.name)
    return AutoPipelineForText2Image.from_pretrained(cfg.name, **kwargs)


def load_model(cfg: ModelSettings) -> LoadedModel:
    """Load the configured model onto its device, ready to serve."""
    device = pick_device(cfg.device)
    dtype = pick_dtype(device, cfg.dtype)
    if cfg.lora is not None and not Path(cfg.lora).exists():
        raise UserInputError(f"LoRA file {cfg.lora} (model.lora) does not exist")
    if cfg.name == TINY_NAME:
        pipe = build_tiny_pipeline(cfg.cache_dir / "tiny-tokenizer" if cfg.cache_dir else None)
    else:
        try:
            pipe = _load_from_source(cfg, dtype)
        except (OSError, ValueError, KeyError) as exc:
            if isinstance(exc, UserInputError):
                raise
            raise UserInputError(
                f"could not load model {cfg.name!r}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}. "
                "model.name takes a Hugging Face hub id (downloaded once, then cached), a local "
                "diffusers folder, a .safetensors/.ckpt file, or tiny"
            ) from exc
    return prepare(pipe, cfg, name=cfg.name, device=device, dtype=dtype)


def prepare(
    pipe: DiffusionPipeline,
    cfg: ModelSettings,
    *,
    name: str,
    device: torch.device,
    dtype: torch.dtype,
) -> LoadedModel:
    """Place a pipeline on the device, apply LoRA and speed-ups, and pair it with an img2img
    view of the same modules (also used by the benchmark's random real-size models)."""
    if any(p.dtype != dtype for p in pipe.unet.parameters()):
        pipe.to(device=device, dtype=dtype)
    else:
        pipe.to(device)
    if getattr(pipe, "safety_checker", None) is not None:
        # Moderation is done by moderation/ with the server's policy, not by a black square.
        pipe.safety_checker = None
    if cfg.lora is not None:
        pipe.load_lora_weights(str(cfg.lora))
        pipe.fuse_lora(lora_scale=cfg.lora_scale)
    pipe.vae.enable_slicing()  # decode one image at a time: less peak memory for batches
    if device.type == "cuda" and cfg.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
    pipe.set_progress_bar_config(disable=True)
    defaults = detect_defaults(pipe, name)
    img2img = AutoPipelineForImage2Image.from_pipe(pipe)
    img2img.set_progress_bar_config(disable=True)
    if device.type == "cuda" and cfg.compile:
        # One compiled UNet shared by both pipelines; the first run of each new shape compiles.
        pipe.unet = img2img.unet = torch.compile(pipe.unet)
    return LoadedModel(
        txt2img=pipe,
        img2img=img2img,
        defaults=defaults,
        device=device,
        dtype=dtype,
        name=name,
    )


def make_scheduler(base_config: Any, name: str) -> Any:
    """A fresh scheduler per run from the model's own scheduler config: schedulers keep step
    state, and a fresh one keeps runs reproducible."""
    cls, extra = SCHEDULER_CLASSES[name]
    return cls.from_config(base_config, **extra)
