"""/blend: a new image from the content and style of 2-5 images, through an IP-Adapter.

The adapter is loaded once (weights and CLIP image encoder kept in memory) and put on the UNet
only for the call that blends: with an adapter on, diffusers' UNet refuses calls without image
embeddings, and every other job shares that UNet. Putting it on and taking it off costs a few
tens of milliseconds (new attention processors from tensors already in memory).

Setting ``model.ip_adapter`` (``ModelSettings``): a hub repository or a local folder laid out
like ``h94/IP-Adapter`` (``<subfolder>/<weight_name>`` and ``<subfolder>/image_encoder``), or
``tiny`` (a randomly initialised adapter built in code for tests, like ``generation/tiny.py``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core.errors import UserInputError

log = logging.getLogger(__name__)

MIN_IMAGES, MAX_IMAGES = 2, 5
TINY = "tiny"
ENABLE_HINT = (
    "/blend needs an IP-Adapter, and this bot has none configured. The admin can enable it with "
    "`model.ip_adapter = \"h94/IP-Adapter\"` (SD 1.5; for SDXL also `model.ip_adapter_weight = "
    "\"ip-adapter_sdxl.safetensors\"` and `model.ip_adapter_subfolder = \"sdxl_models\"`) in the "
    "config file, then restart it."
)


@dataclass
class Adapter:
    """An IP-Adapter held in memory: its weights, image encoder and pre-processor."""

    state_dict: dict[str, dict[str, torch.Tensor]]
    image_encoder: Any
    feature_extractor: Any
    scale: float


_lock = threading.Lock()
_cache: dict[tuple[str, str, str, str], Adapter] = {}


def adapter_for(pipe: Any, limits: Any) -> Adapter:
    """The configured adapter for ``pipe`` (loaded on first use); ``UserInputError`` with the
    way to enable it when none is configured or it cannot be loaded."""
    source = (getattr(limits, "ip_adapter", None) or "").strip()
    if not source or source.lower() == "off":
        raise UserInputError(ENABLE_HINT)
    key = (source, limits.ip_adapter_subfolder, limits.ip_adapter_weight, str(pipe.device))
    with _lock:
        if key not in _cache:
            try:
                _cache[key] = (
                    tiny_adapter(pipe) if source == TINY else _load(pipe, source, limits)
                )
            except Exception as exc:  # noqa: BLE001 - told to the user with the way out
                log.exception("could not load the IP-Adapter %s", source)
                raise UserInputError(
                    f"/blend is not available: the IP-Adapter {source!r} could not be loaded "
                    f"({type(exc).__name__}). The admin can check `model.ip_adapter`."
                ) from None
        adapter = _cache[key]
    adapter.scale = float(limits.ip_adapter_scale)
    return adapter


def _load(pipe: Any, source: str, limits: Any) -> Adapter:
    """Weights and image encoder from a hub repository or a folder of the same layout."""
    from safetensors.torch import load_file
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    subfolder, weight = limits.ip_adapter_subfolder, limits.ip_adapter_weight
    folder = Path(source).expanduser()
    if folder.is_dir():
        path = folder / subfolder / weight
    else:
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(source, weight, subfolder=subfolder or None))
    if path.suffix == ".safetensors":
        flat = load_file(str(path))
        state_dict: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
        for name, tensor in flat.items():
            group, _, rest = name.partition(".")
            state_dict.setdefault(group, {})[rest] = tensor
    else:
        state_dict = torch.load(str(path), map_location="cpu", weights_only=True)
    encoder_path = f"{subfolder}/image_encoder" if subfolder else "image_encoder"
    encoder = CLIPVisionModelWithProjection.from_pretrained(
        str(folder) if folder.is_dir() else source, subfolder=encoder_path, dtype=pipe.dtype
    ).to(pipe.device)
    size = encoder.config.image_size
    return Adapter(
        state_dict, encoder, CLIPImageProcessor(size=size, crop_size=size), limits.ip_adapter_scale
    )


def tiny_adapter(pipe: Any) -> Adapter:
    """A randomly initialised IP-Adapter that fits ``pipe``'s UNet (fixed seed), for tests."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    unet = pipe.unet
    cross = unet.config.cross_attention_dim
    embed = 32
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        encoder = CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                hidden_size=32,
                intermediate_size=37,
                num_attention_heads=4,
                num_hidden_layers=2,
                image_size=32,
                patch_size=8,
                projection_dim=embed,
            )
        )
        image_proj = {
            "proj.weight": torch.randn(4 * cross, embed) * 0.1,
            "proj.bias": torch.zeros(4 * cross),
            "norm.weight": torch.ones(cross),
            "norm.bias": torch.zeros(cross),
        }
        layers: dict[str, torch.Tensor] = {}
        key_id = 1
        for name in unet.attn_processors:
            if name.endswith("attn1.processor"):
                continue
            hidden = _hidden_size(unet, name)
            layers[f"{key_id}.to_k_ip.weight"] = torch.randn(hidden, cross) * 0.1
            layers[f"{key_id}.to_v_ip.weight"] = torch.randn(hidden, cross) * 0.1
            key_id += 2
    encoder = encoder.to(device=pipe.device, dtype=pipe.dtype)
    processor = CLIPImageProcessor(size=32, crop_size=32)
    return Adapter({"image_proj": image_proj, "ip_adapter": layers}, encoder, processor, 0.7)


def _hidden_size(unet: Any, name: str) -> int:
    """The width of the attention block ``name`` (as diffusers' adapter loader works it out)."""
    channels = list(unet.config.block_out_channels)
    if name.startswith("mid_block"):
        return channels[-1]
    block = int(name.split(".")[1])
    return list(reversed(channels))[block] if name.startswith("up_blocks") else channels[block]


@contextlib.contextmanager
def adapter_on(pipe: Any, adapter: Adapter) -> Iterator[None]:
    """``adapter`` on ``pipe``'s UNet for one call, taken off again even on error or cancel."""
    pipe.register_modules(
        image_encoder=adapter.image_encoder, feature_extractor=adapter.feature_extractor
    )
    try:
        pipe.load_ip_adapter(adapter.state_dict, subfolder="", weight_name="")
        pipe.set_ip_adapter_scale(adapter.scale)
        yield
    finally:
        pipe.unload_ip_adapter()
        # Not kept on the pipeline: the next blend puts them back.
        pipe.register_modules(image_encoder=None)
        if getattr(pipe, "feature_extractor", None) is adapter.feature_extractor:
            pipe.register_modules(feature_extractor=None)


def check_count(count: int) -> None:
    if not MIN_IMAGES <= count <= MAX_IMAGES:
        raise UserInputError(
            f"/blend takes {MIN_IMAGES} to {MAX_IMAGES} images, not {count}"
        )
