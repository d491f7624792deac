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
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

TINY_NAME = "tiny"
INIT_SEED = 0
TEXT_DIM = 32
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
        # Four blocks, so latents are 1/8 of the image side as in real SD models (and the UNet
        # works on 8x8 latents for a 64x64 image, which keeps it fast).
        vae = AutoencoderKL(
            block_out_channels=(32, 32, 64, 64),
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            sample_size=64,
            norm_num_groups=32,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                hidden_size=TEXT_DIM,
                intermediate_size=37,
                layer_norm_eps=1e-05,
                num_attention_heads=4,
                num_hidden_layers=5,
                vocab_size=len(tokenizer),
                max_position_embeddings=MAX_TOKENS,
            )
        )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="trailing",
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
