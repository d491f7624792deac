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

from core.config import (
    SINGLE_FILE_SUFFIXES,
    TINY_NAME,
    TINY_NAMES,
    TINY_SDXL_NAME,
    ModelSettings,
)
from core.errors import UserInputError
from generation.request import ModelDefaults
from generation.tiny import build_tiny

log = logging.getLogger(__name__)

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
    compiled: bool = False  # the UNet's blocks go through torch.compile: warm up before serving
    warm_up_s: float | None = None  # seconds ``Engine.warm_up`` took (compile time, mostly)


def is_sdxl(pipe: DiffusionPipeline) -> bool:
    """SDXL and SDXL-Turbo pipelines (two text encoders, added time conditions)."""
    return isinstance(pipe, StableDiffusionXLPipeline) or "XL" in type(pipe).__name__


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
    if name == TINY_SDXL_NAME:
        return ModelDefaults(family="sdxl", size=64, steps=4, guidance=5.0, scheduler="euler")
    is_xl = is_sdxl(pipe)
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


def _checkpoint_keys(path: Path) -> list[str]:
    """Tensor names of a single-file checkpoint, without reading the weights."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    try:  # a zip-format .ckpt maps lazily; an old pickle one has to be read whole
        try:
            state = torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - e.g. training objects pickled in: diffusers says
        log.warning("cannot list the tensors of %s (%s); loading it as SD 1.x/2.x", path, exc)
        return []
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    return [k for k in state if isinstance(k, str)] if isinstance(state, dict) else []


def _is_sdxl_checkpoint(path: Path) -> bool:
    """SDXL single files (.safetensors or .ckpt) carry a second text encoder under
    ``conditioner.embedders.1``."""
    return any(k.startswith("conditioner.embedders.1") for k in _checkpoint_keys(path))


def _pipeline_kwargs(components: Any, *, xl: bool) -> dict[str, Any]:
    """What every load passes so nothing is downloaded or run only to be thrown away.

    ``components``: the model's ``model_index.json`` (or None when it cannot be read). SD 1.x
    models list a ~0.6 GB safety checker that moderation/ replaces; SDXL pipelines add
    Stability's invisible watermark (a second mark under ours, with visible artefacts and CPU
    time on the GPU thread) whenever ``invisible-watermark`` is installed, which it is for ours.
    """
    kwargs: dict[str, Any] = {}
    if components is None or "safety_checker" in components:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    if xl:
        kwargs["add_watermarker"] = False
    return kwargs


def _model_index(name: str, cache_dir: Path | None) -> dict[str, Any] | None:
    try:
        return dict(DiffusionPipeline.load_config(name, cache_dir=cache_dir))
    except (OSError, ValueError):
        return None


def _load_from_source(
    cfg: ModelSettings,
    dtype: torch.dtype,
    *,
    name: str | None = None,
    auto: type = AutoPipelineForText2Image,
    single: tuple[type, type] = (StableDiffusionPipeline, StableDiffusionXLPipeline),
) -> DiffusionPipeline:
    """``name`` (default ``cfg.name``) as a pipeline of ``auto``'s task; ``single``: the SD and
    SDXL classes of that task for single-file checkpoints (the inpainting model loads so too)."""
    name = name or cfg.name
    path = Path(name).expanduser()
    cache_dir = str(cfg.cache_dir) if cfg.cache_dir else None
    if path.is_file():
        if path.suffix not in SINGLE_FILE_SUFFIXES:
            raise UserInputError(f"model file {path} must be a .safetensors or .ckpt checkpoint")
        xl = _is_sdxl_checkpoint(path)
        cls = single[1] if xl else single[0]
        log.info("loading single-file checkpoint %s as %s", path, cls.__name__)
        extra = {"add_watermarker": False} if xl else {"safety_checker": None}
        # The diffusers configs it needs beside the weights come from the hub cache.
        return cls.from_single_file(str(path), torch_dtype=dtype, cache_dir=cache_dir, **extra)
    if path.is_dir():
        log.info("loading diffusers folder %s", path)
        index = _model_index(str(path), None)
        xl = index is not None and "text_encoder_2" in index
        return auto.from_pretrained(
            str(path), torch_dtype=dtype, **_pipeline_kwargs(index, xl=xl)
        )
    if name.endswith(SINGLE_FILE_SUFFIXES) or name.startswith((".", "/", "~")):
        raise UserInputError(
            f"model {name} does not exist; give a hub id, a folder, a checkpoint file or tiny"
        )
    log.info(
        "loading %s from the Hugging Face hub (cache: %s)", name, cfg.cache_dir or "default"
    )
    index = _model_index(name, cfg.cache_dir)
    xl = index is not None and "text_encoder_2" in index
    kwargs: dict[str, Any] = {
        "torch_dtype": dtype,
        "cache_dir": cfg.cache_dir,
        **_pipeline_kwargs(index, xl=xl),
    }
    if dtype in (torch.float16, torch.bfloat16):  # fp16 files load into bf16: half the download
        try:
            return auto.from_pretrained(name, variant="fp16", **kwargs)
        except (OSError, ValueError):
            log.info("no fp16 variant of %s; loading the default weights", name)
    return auto.from_pretrained(name, **kwargs)


def load_model(cfg: ModelSettings) -> LoadedModel:
    """Load the configured model onto its device, ready to serve."""
    device = pick_device(cfg.device)
    dtype = pick_dtype(device, cfg.dtype)
    if cfg.lora is not None and not Path(cfg.lora).exists():
        raise UserInputError(f"LoRA file {cfg.lora} (model.lora) does not exist")
    if cfg.name in TINY_NAMES:
        pipe = build_tiny(cfg.name, cfg.cache_dir / "tiny-tokenizer" if cfg.cache_dir else None)
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
        # The fused weights stay; the LoRA layers (and their extra work per step) go.
        pipe.unload_lora_weights()
    pipe.vae.enable_slicing()  # decode one image at a time: less peak memory for batches
    xl = is_sdxl(pipe)
    if xl and device.type == "cuda" and dtype == torch.float16 and pipe.vae.config.force_upcast:
        if torch.cuda.is_bf16_supported():
            # SDXL's VAE overflows in fp16, so diffusers decodes every batch in fp32; bf16
            # has fp32's range at half the cost (bench/gpu.py measures both).
            set_vae_dtype(pipe, torch.bfloat16)
    if device.type == "cuda" and cfg.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
    pipe.set_progress_bar_config(disable=True)
    defaults = detect_defaults(pipe, name)
    img2img = AutoPipelineForImage2Image.from_pipe(
        pipe, **({"add_watermarker": False} if xl else {})
    )
    img2img.set_progress_bar_config(disable=True)
    for p in (pipe, img2img):
        if getattr(p, "watermark", None) is not None:  # made by a loader we did not call
            p.watermark = None
    compiled = device.type == "cuda" and cfg.compile
    if compiled:
        compile_unet(pipe.unet)
    return LoadedModel(
        txt2img=pipe,
        img2img=img2img,
        defaults=defaults,
        device=device,
        dtype=dtype,
        name=name,
        compiled=compiled,
    )


def compile_unet(unet: torch.nn.Module) -> None:
    """Compile the UNet in place, shared by both pipelines.

    Only the repeated transformer blocks are compiled (diffusers' regional compilation): the
    compile takes seconds instead of minutes, and a new batch or image size recompiles those
    small graphs quickly (shapes go dynamic after the second one) instead of stalling the GPU
    thread past the worker's heartbeat. ``Engine.warm_up`` compiles the default shapes at load.
    """
    if getattr(unet, "_repeated_blocks", None) and hasattr(unet, "compile_repeated_blocks"):
        unet.compile_repeated_blocks(fullgraph=True)
    else:
        unet.compile(dynamic=True)


def set_vae_dtype(pipe: DiffusionPipeline, dtype: torch.dtype) -> None:
    """Run the VAE in ``dtype`` whatever the UNet's dtype (e.g. SDXL's VAE in bf16 beside an
    fp16 UNet, instead of diffusers' fp32 upcast for every decode).

    The pipelines hand the VAE latents and images in the UNet's dtype, so inputs are cast on the
    way in; the fp32 upcast is switched off because it is what this replaces.
    """
    vae = pipe.vae
    vae.to(dtype=dtype)
    vae.register_to_config(force_upcast=False)

    def cast(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        first = args[0]
        if isinstance(first, torch.Tensor) and first.is_floating_point() and first.dtype != dtype:
            return (first.to(dtype), *args[1:])
        return args

    if not getattr(vae, "_imagine_cast_inputs", False):
        vae._imagine_cast_inputs = True
        for module in (vae.encoder, vae.quant_conv, vae.post_quant_conv, vae.decoder):
            if module is not None:
                module.register_forward_pre_hook(cast)


def make_scheduler(base_config: Any, name: str) -> Any:
    """A fresh scheduler per run from the model's own scheduler config: schedulers keep step
    state, and a fresh one keeps runs reproducible."""
    cls, extra = SCHEDULER_CLASSES[name]
    return cls.from_config(base_config, **extra)
