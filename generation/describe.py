"""/describe's captioner: an image in, four distinct Midjourney-style prompt suggestions out.

Why a captioning model and not the diffusion model: nothing in a Stable Diffusion pipeline reads
images back into words. BLIP (``model.captioner``, a hub id or a folder) does, in ~1 GB; the
built-in ``tiny`` one is random (it writes word salad), built in code like ``generation/tiny.py``
so tests need no download. Four suggestions come from one beam search (the beams are different
captions of the same picture); if beams coincide, captions sampled with fixed seeds fill in,
so the same image always gets the same four.

Loaded once, lazily, in a plain thread (a first use may download, which must not hold up a
batch), then moved to the worker's device and dtype on its first turn: the worker runs it between
batches (``Worker.run_between_jobs``), so a caption never competes with a denoising call.
The image itself is only read here; nothing keeps it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from math import gcd
from typing import TYPE_CHECKING, Any

from core.config import TINY_NAME
from core.errors import UserInputError

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

SUGGESTIONS = 4
MAX_NEW_TOKENS = 30
RETRY_LOAD_AFTER_S = 300.0  # a failed load (no download, no internet) is tried again after this
OFF = ("", "off", "none")
# Ratios people ask for; an image's shape is shown as the nearest one.
COMMON_RATIOS = ((1, 1), (5, 4), (4, 3), (3, 2), (16, 10), (16, 9), (2, 1), (21, 9))


class CaptionerUnavailable(UserInputError):
    """/describe cannot run here; the message says how an admin turns it on."""


def is_enabled(name: str) -> bool:
    return name.strip().lower() not in OFF


def aspect_suffix(width: int, height: int) -> str:
    """``--ar W:H`` for the image's shape, snapped to the nearest common ratio."""
    if width <= 0 or height <= 0:
        return "--ar 1:1"
    ratio = max(width, height) / min(width, height)
    w, h = min(COMMON_RATIOS, key=lambda r: abs(r[0] / r[1] - ratio))
    if height > width:
        w, h = h, w
    divisor = gcd(w, h)
    return f"--ar {w // divisor}:{h // divisor}"


def clean(text: str) -> str:
    """Printable, single-line, no stray spaces: what a prompt field can hold."""
    kept = "".join(c if c.isprintable() else " " for c in text)
    return " ".join(kept.replace("--", " ").split())


@dataclass
class Captioner:
    """A loaded captioning model with its image processor and tokenizer."""

    model: Any
    image_processor: Any
    tokenizer: Any
    device: Any = "cpu"
    dtype: Any = None
    generate_kwargs: dict[str, Any] = field(default_factory=dict)
    max_new_tokens: int = MAX_NEW_TOKENS

    def captions(self, image: Image.Image, count: int = SUGGESTIONS) -> list[str]:
        """``count`` distinct, non-empty, printable captions; the same image gives the same ones."""
        import torch

        pixels = self.image_processor(images=image.convert("RGB"), return_tensors="pt")
        pixel_values = pixels["pixel_values"].to(self.device, dtype=self.dtype)
        found: list[str] = []
        with torch.inference_mode():
            beams = self.model.generate(
                pixel_values=pixel_values,
                num_beams=max(count, 4),
                num_return_sequences=max(count, 4),
                max_new_tokens=self.max_new_tokens,
                **self.generate_kwargs,
            )
            _add_distinct(found, self._decode(beams), count)
            for seed in range(4 * count):  # deterministic padding when beams coincide
                if len(found) >= count:
                    break
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    sampled = self.model.generate(
                        pixel_values=pixel_values,
                        do_sample=True,
                        top_k=50,
                        max_new_tokens=self.max_new_tokens,
                        **self.generate_kwargs,
                    )
                _add_distinct(found, self._decode(sampled), count)
        while len(found) < count:  # a model that only ever says one thing
            found.append(f"{found[0] if found else 'a picture'}, variation {len(found) + 1}")
        return found

    def place(self, device: Any, dtype: Any = None) -> None:
        """Move to the worker's device and dtype (once; on the GPU thread's turn)."""
        dtype = dtype or self.dtype
        if (str(device), dtype) != (str(self.device), self.dtype):
            self.model.to(device, dtype=dtype)
            self.device, self.dtype = device, dtype

    def suggestions(self, image: Image.Image, count: int = SUGGESTIONS) -> list[str]:
        """Prompts for /imagine: each caption with the image's aspect ratio."""
        suffix = aspect_suffix(*image.size)
        return [f"{caption} {suffix}" for caption in self.captions(image, count)]

    def _decode(self, ids: Any) -> list[str]:
        return [clean(t) for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]


def _add_distinct(found: list[str], texts: list[str], count: int) -> None:
    for text in texts:
        if text and text.lower() not in {f.lower() for f in found} and len(found) < count:
            found.append(text)


def load_captioner(name: str, *, cache_dir: Any = None) -> Captioner:
    """The captioner called ``name`` on the CPU: ``tiny`` (built here) or a BLIP hub id or
    folder (may download)."""
    if name == TINY_NAME:
        return build_tiny_captioner()
    import torch
    from transformers import AutoProcessor, BlipForConditionalGeneration

    processor = AutoProcessor.from_pretrained(name, cache_dir=cache_dir)
    model = BlipForConditionalGeneration.from_pretrained(name, cache_dir=cache_dir).eval()
    return Captioner(model, processor.image_processor, processor.tokenizer, "cpu", torch.float32)


def build_tiny_captioner() -> Captioner:
    """A tiny random BLIP (fixed init seed) that may only write whole common words, so its
    gibberish is readable and deterministic."""
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    from generation.tiny import _COMMON_WORDS, build_tokenizer

    tokenizer = build_tokenizer()
    ends = {"bos_token_id": tokenizer.bos_token_id, "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id, "sep_token_id": tokenizer.eos_token_id}
    small = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
             "num_attention_heads": 4, "projection_dim": 32}
    config = BlipConfig(
        vision_config={**small, "image_size": 32, "patch_size": 8},
        text_config={**small, **ends, "vocab_size": len(tokenizer), "encoder_hidden_size": 32,
                     "max_position_embeddings": MAX_NEW_TOKENS + 2},
        projection_dim=32,
        image_text_hidden_size=32,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BlipForConditionalGeneration(config).eval()
    words = {tokenizer.convert_tokens_to_ids(w + "</w>") for w in _COMMON_WORDS}
    allowed = words | {tokenizer.eos_token_id}
    suppress = [i for i in range(len(tokenizer)) if i not in allowed]
    processor = BlipImageProcessorPil(size={"height": 32, "width": 32})
    kwargs = {"suppress_tokens": suppress, "min_new_tokens": 3}
    return Captioner(model, processor, tokenizer, "cpu", torch.float32, kwargs, max_new_tokens=10)


class LazyCaptioner:
    """The configured captioner, loaded on first use and kept; a failed load is reported as
    ``CaptionerUnavailable`` (with how to fix it) and retried after a while, not on every call."""

    def __init__(self, name: str, *, cache_dir: Any = None) -> None:
        self.name = name.strip()
        self.cache_dir = cache_dir
        self._captioner: Captioner | None = None
        self._failed: tuple[float, str] | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return is_enabled(self.name)

    def check_enabled(self) -> None:
        """Refuse at once when /describe is switched off, before anything is downloaded."""
        if not self.enabled:
            raise CaptionerUnavailable(
                "/describe is switched off on this bot; an admin can turn it on by setting "
                "model.captioner (e.g. Salesforce/blip-image-captioning-base)"
            )

    def get(self) -> Captioner:
        """The captioner on the CPU. Blocking, and a first load may download: call it in a
        plain thread, not on the GPU thread's turn, so a download never holds up a batch."""
        self.check_enabled()
        with self._lock:
            if self._captioner is not None:
                return self._captioner
            if self._failed and time.monotonic() - self._failed[0] < RETRY_LOAD_AFTER_S:
                raise CaptionerUnavailable(self._failed[1])
            try:
                self._captioner = load_captioner(self.name, cache_dir=self.cache_dir)
            except Exception as exc:  # noqa: BLE001 - missing files, no internet, bad folder
                log.warning("cannot load the captioner %s: %s", self.name, exc)
                message = (
                    f"/describe is not available: its captioning model {self.name!r} could not "
                    f"be loaded. An admin can download it (`hf download {self.name}`), point "
                    "model.captioner at a local copy, or set model.captioner = \"off\""
                )
                self._failed = (time.monotonic(), message)
                raise CaptionerUnavailable(message) from None
            return self._captioner

    def suggest(self, image: Image.Image, device: Any = "cpu", dtype: Any = None) -> list[str]:
        """Four prompt suggestions for ``image``, on ``device`` (blocking; the worker's turn)."""
        captioner = self.get()
        captioner.place(device, dtype)
        return captioner.suggestions(image)
