"""How fast the engine makes images, and what batching and co-batching buy.

    python -m bench.generation                         # tiny random model, CPU
    python -m bench.generation --json                  # same, one JSON object on stdout
    python -m bench.generation --device cuda --arch sd15 --steps 20
    python -m bench.generation --device cuda --arch sdxl --steps 20
    python -m bench.generation --device cuda --arch sd15 --steps 20 --compile

Measured side by side in one run (the cases are interleaved, repeats take the median):

- ``batch1``: one request of 1 image;  ``batch4``: one request of 4 images (one denoising call);
- ``cobatched``: N compatible requests of 1 image each (different prompts and seeds) in one
  ``engine.generate`` call, versus ``sequential``: the same N requests one call each.

Figures: images/s and s/step (wall time of the call / steps, so it includes the text encoder and
the VAE). Ratios: batch4 vs batch1 images/s, cobatched vs sequential images/s.

On a GPU, ``--arch sd15|sdxl`` builds real-size UNet/VAE/text encoders from the configs below
with random weights in fp16: speed does not depend on weight values, and nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import torch

from core.config import Settings
from generation.engine import Engine
from generation.loading import pick_device, pick_dtype, prepare
from generation.request import GenerationRequest

SD_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
SD15_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280, 1280],
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
SDXL_UNET = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "transformer_layers_per_block": [1, 2, 10],
    "attention_head_dim": [5, 10, 20],
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
CLIP_L = {  # SD1.5's text encoder, also SDXL's first
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}
CLIP_BIGG = {  # SDXL's second text encoder
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "hidden_act": "gelu",
    "projection_dim": 1280,
}
ARCH_SIZE = {"tiny": 64, "sd15": 512, "sdxl": 1024}
PROMPTS = ["a red fox", "a castle at night", "a robot in the city", "a blue bird", "an old house"]


def random_pipeline(arch: str, device: torch.device, dtype: torch.dtype) -> Any:
    """A real-size SD1.5 or SDXL pipeline with random weights, built on the device."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from generation.tiny import build_tokenizer

    tokenizer = build_tokenizer()

    def clip(cfg: dict[str, Any], cls: type) -> Any:
        return cls(CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, **cfg)).to(
            device, dtype
        )

    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )
    with torch.device(device):
        vae_cfg = dict(SD_VAE)
        if arch == "sdxl":
            vae_cfg.update(sample_size=1024, scaling_factor=0.13025)
        vae = AutoencoderKL(**vae_cfg).to(dtype)
        if arch == "sd15":
            unet = UNet2DConditionModel(**SD15_UNET).to(dtype)
            return StableDiffusionPipeline(
                vae=vae,
                text_encoder=clip(CLIP_L, CLIPTextModel),
                tokenizer=tokenizer,
                unet=unet,
                scheduler=scheduler,
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
        unet = UNet2DConditionModel(**SDXL_UNET).to(dtype)
        return StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=clip(CLIP_L, CLIPTextModel),
            text_encoder_2=clip(CLIP_BIGG, CLIPTextModelWithProjection),
            tokenizer=tokenizer,
            tokenizer_2=tokenizer,
            unet=unet,
            scheduler=scheduler,
            add_watermarker=False,
        )


def build_engine(args: argparse.Namespace) -> Engine:
    settings = Settings(
        model={
            "name": "tiny" if args.arch == "tiny" else f"random-{args.arch}",
            "device": args.device,
            "dtype": args.dtype,
            "compile": args.compile,
            "max_batch": max(4, args.n),
            "max_pixels": max(1024 * 1024, args.size * args.size),
        }
    )
    if args.arch == "tiny":
        return Engine.load(settings)
    device = pick_device(args.device)
    dtype = pick_dtype(device, settings.model.dtype)
    pipe = random_pipeline(args.arch, device, dtype)
    return Engine(
        prepare(pipe, settings.model, name=settings.model.name, device=device, dtype=dtype),
        settings,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--arch", default="tiny", choices=sorted(ARCH_SIZE))
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", "float16", "bfloat16", "float32"]
    )
    parser.add_argument("--size", type=int, help="image side in px (default: the arch's native)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet (GPU)")
    parser.add_argument("--n", type=int, default=4, help="co-batched requests (default 4)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    args.size = args.size or ARCH_SIZE[args.arch]
    return args


def measure(engine: Engine, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Each case's median over ``args.repeats`` interleaved runs, after one warm-up."""

    def req(i: int, count: int = 1) -> GenerationRequest:
        return GenerationRequest(
            PROMPTS[i % len(PROMPTS)],
            width=args.size,
            height=args.size,
            steps=args.steps,
            guidance=args.guidance,
            seed=1000 + i,
            count=count,
        )

    def timed(reqs_per_call: list[list[GenerationRequest]]) -> float:
        t0 = time.perf_counter()
        for reqs in reqs_per_call:
            engine.generate(reqs)
        if engine.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    cases = {  # name -> (calls, images made)
        "batch1": ([[req(0)]], 1),
        "batch4": ([[req(0, 4)]], 4),
        "cobatched": ([[req(i) for i in range(args.n)]], args.n),
        "sequential": ([[req(i)] for i in range(args.n)], args.n),
    }
    timed(cases["batch4"][0])  # warm-up: allocator, kernels, (compile)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, (calls, _images) in cases.items():
            samples[name].append(timed(calls))

    figures = {}
    for name, (calls, images) in cases.items():
        seconds = statistics.median(samples[name])
        figures[name] = {
            "images": images,
            "calls": len(calls),
            "seconds": round(seconds, 4),
            "images_per_s": round(images / seconds, 3),
            "s_per_step": round(seconds / (args.steps * len(calls)), 4),
        }
    return figures


def print_table(result: dict[str, Any], load_s: float) -> None:
    r, figures = result, result["figures"]
    print(
        f"{r['arch']} on {r['device']} ({r['dtype']}), {r['size']}x{r['size']}, "
        f"{r['steps']} steps, guidance {r['guidance']}, median of {r['repeats']}; "
        f"load {load_s:.1f} s"
    )
    print(f"{'case':<12}{'images':>7}{'calls':>6}{'seconds':>10}{'images/s':>10}{'s/step':>9}")
    for name, fig in figures.items():
        print(
            f"{name:<12}{fig['images']:>7}{fig['calls']:>6}{fig['seconds']:>10.3f}"
            f"{fig['images_per_s']:>10.2f}{fig['s_per_step']:>9.4f}"
        )
    for name, value in result["ratios"].items():
        print(f"{name}: x{value}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    engine = build_engine(args)
    load_s = time.perf_counter() - started
    figures = measure(engine, args)
    result = {
        "arch": args.arch,
        "device": str(engine.device),
        "dtype": str(engine.dtype).removeprefix("torch."),
        "size": args.size,
        "steps": args.steps,
        "guidance": args.guidance,
        "compile": args.compile,
        "n": args.n,
        "repeats": args.repeats,
        "load_s": round(load_s, 2),
        "figures": figures,
        "ratios": {
            "batch4_vs_batch1_images_per_s": round(
                figures["batch4"]["images_per_s"] / figures["batch1"]["images_per_s"], 2
            ),
            "cobatched_vs_sequential_images_per_s": round(
                figures["cobatched"]["images_per_s"] / figures["sequential"]["images_per_s"], 2
            ),
        },
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result, load_s)
    return 0

if __name__ == "__main__":
    sys.exit(main())
