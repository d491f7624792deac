"""The built-in ``tiny`` model: a small, randomly initialised Stable Diffusion pipeline built in code.

It exists so that tests, CI and offline trials exercise the *real* diffusers code path (UNet,
VAE, CLIP text encoder, tokenizer, schedulers) without downloading gigabytes. Its weights are
random, so it makes coloured noise, not pictures. The init seed is fixed, so every run builds the
same weights and the same request gives the same pixels.

The tokenizer vocabulary is generated here too (byte-level characters plus a few merges for
common words) and written to a cache folder, because CLIP's tokenizer loads from files.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

from core.config import TINY_SDXL_NAME

INIT_SEED = 0
TEXT_DIM = 32
# SDXL's second encoder is wider than its first (1280 vs 768); diffusers tells them apart in a
# single file by that width, so the tiny ones differ too.
TEXT_DIM_2 = 64
MAX_TOKENS = 77

# Words worth a single token each; everything else falls back to characters.
_COMMON_WORDS = (
    "a an the of and in on with at by for to from is are cat dog fox red blue green yellow black "
    "white photo painting portrait of landscape city night day sky sea mountain forest tree "
    "flower house car robot astronaut horse bird castle river sunset style art detailed "
    "beautiful cute small big old new light dark"
).split()


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def tokenizer_files() -> tuple[dict[str, int], list[str]]:
    """A CLIP-style BPE vocabulary and merge list, generated deterministically."""
    chars = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in chars + [c + "</w>" for c in chars]:
        vocab.setdefault(token, len(vocab))
    merges: list[str] = []
    for word in _COMMON_WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            pair = f"{pieces[0]} {pieces[1]}"
            merged = pieces[0] + pieces[1]
            if pair not in merges:
                merges.append(pair)
            vocab.setdefault(merged, len(vocab))
            pieces = [merged] + pieces[2:]
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab.setdefault(special, len(vocab))
    return vocab, merges


def build_tokenizer(folder: Path | None = None) -> CLIPTokenizer:
    """Write the generated vocab.json / merges.txt and load a real ``CLIPTokenizer`` from them."""
    folder = (
        Path(folder)
        if folder is not None
        else Path(tempfile.gettempdir()) / "imagine-bot-tiny-tokenizer"
    )
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = tokenizer_files()
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=MAX_TOKENS)


def build_tiny_pipeline(cache_dir: Path | None = None) -> StableDiffusionPipeline:
    """Build the tiny random pipeline (fp32, CPU); identical weights on every call."""
    tokenizer = build_tokenizer(cache_dir)
    with torch.random.fork_rng(devices=[]):  # fixed weights without touching the global RNG
        torch.manual_seed(INIT_SEED)
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=2,
            sample_size=8,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=TEXT_DIM,
            norm_num_groups=32,
        )
        vae = _tiny_vae()
        text_encoder = CLIPTextModel(_text_config(tokenizer, layers=5))
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_sdxl_pipeline(cache_dir: Path | None = None) -> StableDiffusionXLPipeline:
    """An SDXL-shaped tiny random pipeline (fp32, CPU); identical weights on every call.

    Built as a real SDXL checkpoint would load: the watermarker is left at diffusers' default
    (on when ``invisible-watermark`` is installed) and the VAE asks for its fp32 upcast, so the
    loader's and the engine's handling of both is what a test sees. The second text encoder has
    ten layers because diffusers recognises an SDXL single file by its tenth OpenCLIP block.
    """
    tokenizer = build_tokenizer(cache_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        unet = UNet2DConditionModel(
            block_out_channels=(32, 32, 64),
            layers_per_block=2,
            sample_size=8,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            # six micro-conditions (sizes, crop) x 8 + the second encoder's pooled embedding
            projection_class_embeddings_input_dim=6 * 8 + TEXT_DIM_2,
            cross_attention_dim=TEXT_DIM + TEXT_DIM_2,  # both encoders' states, side by side
            norm_num_groups=32,
        )
        vae = _tiny_vae()  # force_upcast, as SDXL's own VAE config says
        text_encoder = CLIPTextModel(_text_config(tokenizer, layers=5))
        text_encoder_2 = CLIPTextModelWithProjection(
            _text_config(
                tokenizer, layers=10, width=TEXT_DIM_2, projection_dim=TEXT_DIM_2, hidden_act="gelu"
            )
        )
    pipe = StableDiffusionXLPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        scheduler=_scheduler(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _tiny_vae() -> AutoencoderKL:
    # Four blocks, so latents are 1/8 of the image side as in real SD models (and the UNet
    # works on 8x8 latents for a 64x64 image, which keeps it fast).
    return AutoencoderKL(
        block_out_channels=(32, 32, 64, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        sample_size=64,
        norm_num_groups=32,
    )


def _text_config(
    tokenizer: CLIPTokenizer, *, layers: int, width: int = TEXT_DIM, **extra: object
) -> CLIPTextConfig:
    return CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=width,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=layers,
        vocab_size=len(tokenizer),
        max_position_embeddings=MAX_TOKENS,
        **extra,
    )


def _scheduler() -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="trailing",
        steps_offset=1,
    )


def build_tiny(name: str, cache_dir: Path | None = None) -> StableDiffusionPipeline:
    """The tiny pipeline called ``name`` (one of ``TINY_NAMES``)."""
    if name == TINY_SDXL_NAME:
        return build_tiny_sdxl_pipeline(cache_dir)
    return build_tiny_pipeline(cache_dir)
