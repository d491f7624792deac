"""The GPU benchmark: what our engine's settings, co-batching and the worker buy on a real GPU.

    python -m bench.gpu                         # CUDA: SD 1.5, SD-Turbo (SD 2.1 shape), SDXL
    python -m bench.gpu --archs sdxl --out /tmp/sdxl.json
    python -m bench.gpu --quick                 # CPU: tiny SD and tiny SDXL, a few seconds (CI)

No download and no internet: the real architectures are built from the configs written below
(and in bench/generation.py) with random weights, which compute exactly as much as the trained
ones. Everything is measured side by side in one run and written as JSON (``--out``):

- per model, images/s at batch 1 and 4 for: plain diffusers defaults (the pipeline called as the
  diffusers docs show it, fp16, SDPA) vs our engine (``generation.loading.prepare``: fp16 UNet,
  SDPA, bf16 VAE for SDXL) with channels_last off/on, fused QKV projections, and torch.compile
  of the repeated blocks (``compile_warm_up_s``: what ``Engine.warm_up`` takes at load);
  the peak GPU memory of each case;
- co-batching: 4 one-image requests in one call vs one call each;
- SDXL's decode: diffusers' fp32 upcast of an fp16 VAE vs the VAE in bf16;
- the upscaler: a native-size image to 2x (tile layout and seconds);
- the worker (store, scheduler, real moderation/watermark/provenance post-processing) vs the
  bare engine on the same jobs, and the GPU's idle gap between batches (p50/p99).

The full run is sized to finish in under 8 minutes on one data-centre GPU; ``--quick`` runs
the same code at tiny sizes on the CPU so CI proves it works (its figures mean nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from bench.generation import SD15_UNET, random_pipeline
from core.config import TINY_NAMES, Settings
from generation.engine import Engine, tile_layout
from generation.loading import compile_unet, prepare, set_vae_dtype
from generation.request import GenerationRequest
from generation.tiny import build_tiny

# SD 2.1 (and SD-Turbo, its distilled 512 px version): SD 1.5's layout with linear projections,
# head sizes instead of head counts, and OpenCLIP ViT-H's text encoder (1024 wide, 23 layers).
SD21_UNET = {
    **SD15_UNET,
    "attention_head_dim": [5, 10, 20, 20],
    "cross_attention_dim": 1024,
    "use_linear_projection": True,
}
CLIP_H = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 23,
    "num_attention_heads": 16,
    "hidden_act": "gelu",
    "projection_dim": 512,
}
# name -> (size, steps, guidance): each model as it is used (SD-Turbo: 1 step, no guidance).
# SDXL at 10 steps keeps the whole run under 8 minutes; s/step is what compares across models.
FULL = {"sd15": (512, 20, 7.0), "sd-turbo": (512, 1, 0.0), "sdxl": (1024, 10, 5.0)}
QUICK = {"tiny": (32, 1, 5.0), "tiny-sdxl": (32, 1, 5.0)}
PROMPTS = ["a red fox", "a castle at night", "a robot in the city", "a blue bird"]


def build_pipeline(arch: str, device: torch.device, dtype: torch.dtype) -> Any:
    """The architecture with random weights, on the device (tiny ones for ``--quick``)."""
    if arch in TINY_NAMES:
        return build_tiny(arch).to(device, dtype)
    if arch in ("sd15", "sdxl"):
        return random_pipeline(arch, device, dtype)
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    pipe = random_pipeline("sd15", device, dtype)  # then SD 2.1's UNet and text encoder
    with torch.device(device):
        unet = UNet2DConditionModel(**SD21_UNET).to(dtype)
        text = CLIPTextModel(
            CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, **CLIP_H)
        ).to(dtype)
    pipe.register_modules(unet=unet, text_encoder=text)
    return pipe


class Clock:
    """Wall time of a GPU call (synchronised) and the peak memory it reached."""

    def __init__(self, device: torch.device, repeats: int, *, warm: bool = True) -> None:
        self.cuda = device.type == "cuda"
        self.repeats = repeats
        self.warm = warm  # --quick skips the warm-up calls: its figures only prove it runs

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def measure(self, fn: Callable[[], Any], *, warm: bool = True) -> dict[str, float | None]:
        """Median seconds of ``repeats`` calls after one warm-up call (allocator, kernels)."""
        if warm and self.warm:
            fn()
        if self.cuda:
            self.sync()
            torch.cuda.reset_peak_memory_stats()
        samples = []
        for _ in range(self.repeats):
            started = time.perf_counter()
            fn()
            self.sync()
            samples.append(time.perf_counter() - started)
        peak = torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None
        return {"seconds": statistics.median(samples), "peak_gib": peak}


def throughput(clock: Clock, run: Callable[[int], Any], images: int, steps: int) -> dict[str, Any]:
    figure = clock.measure(lambda: run(images))
    return {
        "images": images,
        "images_per_s": round(images / figure["seconds"], 3),
        "seconds": round(figure["seconds"], 4),
        "s_per_step": round(figure["seconds"] / steps, 4),  # text encoder and VAE included
        "peak_gib": None if figure["peak_gib"] is None else round(figure["peak_gib"], 2),
    }


def bench_arch(
    arch: str, args: argparse.Namespace, device: torch.device
) -> tuple[dict[str, Any], Engine]:
    """Every per-model figure of one architecture, its cases one after the other; and the
    engine as it ends up (every speed-up on), for the worker run."""
    size, steps, guidance = (QUICK if args.quick else FULL)[arch]
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    clock = Clock(device, args.repeats, warm=not args.quick)
    started = time.perf_counter()
    pipe = build_pipeline(arch, device, dtype)
    out: dict[str, Any] = {"size": size, "steps": steps, "guidance": guidance}
    out["build_s"] = round(time.perf_counter() - started, 2)
    batches = (1, 2) if args.quick else (1, 4)  # --quick: "batch4" is 2 images (CI time)

    def plain(n: int) -> Any:  # the pipeline as diffusers' docs call it
        generator = torch.Generator(device).manual_seed(0)
        return pipe(
            prompt=[PROMPTS[0]] * n,
            num_inference_steps=steps,
            guidance_scale=guidance,
            width=size,
            height=size,
            generator=generator,
        )

    if getattr(pipe, "watermark", "none") is None:
        # bench/generation.py builds SDXL without Stability's watermark; diffusers' default
        # (invisible-watermark is installed, for our own mark) has it on.
        from diffusers.pipelines.stable_diffusion_xl.watermark import (
            StableDiffusionXLWatermarker,
        )

        pipe.watermark = StableDiffusionXLWatermarker()
    cases: dict[str, dict[str, Any]] = {}
    cases["diffusers_defaults"] = by_batch(clock, plain, batches, steps)
    engine = bench_engine(arch, pipe, device, dtype, size)
    request = request_maker(size, steps, guidance)
    cases.update(engine_cases(engine, clock, args, device, batches, steps, request, out))
    base = cases["diffusers_defaults"]
    for figures in cases.values():
        for name, figure in figures.items():
            figure["vs_defaults"] = round(figure["images_per_s"] / base[name]["images_per_s"], 2)
    out["cases"] = cases
    out["cobatching"] = cobatching(engine, clock, [request(i) for i in range(batches[-1])])
    out["upscale"] = upscale_figures(engine, clock, size, request)
    if engine.xl:
        out["sdxl_decode"] = decode_figures(engine, clock, size, device)
    out["total_s"] = round(time.perf_counter() - started, 1)
    return out, engine


def by_batch(
    clock: Clock, run: Callable[[int], Any], batches: tuple[int, int], steps: int
) -> dict[str, Any]:
    """``throughput`` at batch 1 and "4" (2 with --quick)."""
    return {f"batch{4 if n > 1 else 1}": throughput(clock, run, n, steps) for n in batches}


def bench_engine(
    arch: str, pipe: Any, device: torch.device, dtype: torch.dtype, size: int
) -> Engine:
    """Our engine around the same pipeline, every optional speed-up off to start with."""
    settings = Settings(
        model={
            "name": arch if arch in TINY_NAMES else f"random-{arch}",
            "device": device.type,
            "compile": False,
            "channels_last": False,
            "max_batch": 4,
            "max_pixels": max(1024 * 1024, size * size),
        }
    )
    return Engine(
        prepare(pipe, settings.model, name=settings.model.name, device=device, dtype=dtype),
        settings,
    )


def request_maker(size: int, steps: int, guidance: float) -> Callable[..., GenerationRequest]:
    def request(i: int, count: int = 1) -> GenerationRequest:
        return GenerationRequest(
            PROMPTS[i % len(PROMPTS)],
            width=size,
            height=size,
            steps=steps,
            guidance=guidance,
            seed=1000 + i,
            count=count,
        )

    return request


def engine_cases(
    engine: Engine,
    clock: Clock,
    args: argparse.Namespace,
    device: torch.device,
    batches: tuple[int, int],
    steps: int,
    request: Callable[..., GenerationRequest],
    out: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """The engine with each speed-up added in turn (channels-last, fused QKV, torch.compile);
    sets ``out["compile_warm_up_s"]``."""

    def ours(n: int) -> Any:
        return engine.generate([request(0, n)])

    cases: dict[str, dict[str, Any]] = {}
    cases["engine"] = by_batch(clock, ours, batches, steps)
    engine.txt2img.unet.to(memory_format=torch.channels_last)
    cases["engine+channels_last"] = by_batch(clock, ours, batches, steps)
    engine.txt2img.fuse_qkv_projections()
    cases["engine+channels_last+fused_qkv"] = by_batch(clock, ours, batches, steps)
    if device.type == "cuda" or args.compile:
        compile_unet(engine.txt2img.unet)
        engine.model.compiled = True
        out["compile_warm_up_s"] = round(engine.warm_up(), 2)
        cases["engine+channels_last+fused_qkv+compile"] = by_batch(clock, ours, batches, steps)
    else:
        out["compile_warm_up_s"] = None  # torch.compile is measured on CUDA (or --compile)
    return cases


def cobatching(engine: Engine, clock: Clock, reqs: list[GenerationRequest]) -> dict[str, Any]:
    """The requests co-batched in one call vs one call each, and how far their images differ."""
    made: dict[str, list[Any]] = {}
    cobatched = clock.measure(lambda: made.__setitem__("together", engine.generate(reqs)))
    sequential = clock.measure(
        lambda: made.__setitem__("alone", [engine.generate([q])[0] for q in reqs])
    )
    return {
        "requests": len(reqs),
        "cobatched_s": round(cobatched["seconds"], 4),
        "sequential_s": round(sequential["seconds"], 4),
        "gain": round(sequential["seconds"] / cobatched["seconds"], 2),
        # How far a co-batched image is from the same request made alone (fp16 sums in a
        # batch-size dependent order): the tolerance users see when they re-make a seed.
        "vs_solo_pixels": solo_difference(made["together"], made["alone"]),
    }


def upscale_figures(
    engine: Engine, clock: Clock, size: int, request: Callable[..., GenerationRequest]
) -> dict[str, Any]:
    """One 2x tiled upscale, measured without a warm-up call."""
    from PIL import Image

    source = Image.new("RGB", (size, size), (120, 90, 60))
    parent = engine.validate(request(0))
    upscaled = clock.measure(lambda: engine.upscale(source, parent, seed=1), warm=False)
    starts, tile = tile_layout(2 * size, engine.defaults.size)
    return {
        "from": size,
        "to": 2 * size,
        "tiles": len(starts) ** 2,
        "tile": tile,
        "seconds": round(upscaled["seconds"], 3),
        "peak_gib": upscaled["peak_gib"],
    }


def solo_difference(together: list[Any], alone: list[Any]) -> dict[str, float]:
    """Pixel difference (0-255) between each co-batched image and its solo twin."""
    import numpy as np

    every = np.concatenate(
        [
            np.abs(np.asarray(a.images[0], np.int16) - np.asarray(b.images[0], np.int16)).ravel()
            for a, b in zip(together, alone, strict=True)
        ]
    )
    return {
        "max": int(every.max()),
        "mean": round(float(every.mean()), 3),
        "share_differing": round(float((every > 0).mean()), 4),
    }


def decode_figures(engine: Engine, clock: Clock, size: int, device: torch.device) -> dict[str, Any]:
    """SDXL's VAE decoding one image: fp16 weights upcast to fp32 for every decode (what
    diffusers does, as SDXL's VAE overflows in fp16) vs the VAE kept in bf16."""
    from diffusers import AutoencoderKL

    with torch.device(device):
        vae = AutoencoderKL.from_config(engine.txt2img.vae.config).to(torch.float16)
    vae.register_to_config(force_upcast=True)
    latents = torch.randn(1, 4, size // 8, size // 8, device=device, dtype=torch.float16)

    def upcast() -> None:
        vae.to(torch.float32)
        with torch.inference_mode():
            vae.decode(latents.float())
        vae.to(torch.float16)

    fp32 = clock.measure(upcast)
    set_vae_dtype(SimpleNamespace(vae=vae), torch.bfloat16)

    def bf16() -> None:
        with torch.inference_mode():
            vae.decode(latents)

    half = clock.measure(bf16)
    return {
        "fp16_upcast_to_fp32_s": round(fp32["seconds"], 4),
        "bf16_s": round(half["seconds"], 4),
        "bf16_gain": round(fp32["seconds"] / half["seconds"], 2),
        "peak_gib": {"fp32": fp32["peak_gib"], "bf16": half["peak_gib"]},
    }


def bench_worker(
    engine: Engine, arch: str, args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    """The worker with the real post-processing vs the bare engine on the same jobs."""
    from bench import worker as worker_bench

    size, steps, guidance = (QUICK if args.quick else FULL)[arch]
    reqs = [
        engine.validate(
            GenerationRequest(
                f"a lighthouse at dusk, study {i}",
                width=size,
                height=size,
                steps=steps,
                guidance=guidance,
                count=args.worker_images,
                seed=2000 + i,
            )
        )
        for i in range(args.worker_jobs)
    ]
    settings = Settings(
        data_dir=Path(tempfile.mkdtemp(prefix="imagine-bench-gpu-")),
        model={"name": engine.name, "device": device.type, "max_batch": 4},
    )

    async def run() -> dict[str, Any]:
        await worker_bench.bare(engine, reqs[:1])  # warm-up
        bare_s = await worker_bench.bare(engine, reqs)
        outcome = await worker_bench.through_worker(
            engine, settings, reqs, 4, cobatch=True, real_post=args.post == "real"
        )
        return {"bare_s": bare_s, **outcome}

    outcome = asyncio.run(run())
    gaps = outcome["gaps_ms"]
    return {
        "model": arch,
        "jobs": args.worker_jobs,
        "images_per_job": args.worker_images,
        "postprocess": outcome["postprocess"],
        "bare_engine_jobs_per_s": round(args.worker_jobs / outcome["bare_s"], 3),
        "worker_jobs_per_s": round(args.worker_jobs / outcome["seconds"], 3),
        "worker_vs_bare": round(outcome["bare_s"] / outcome["seconds"], 3),
        "postprocess_ms_per_job_p50": round(worker_bench.percentile(outcome["post_ms"], 50), 1),
        "gpu_idle_gap_ms": {
            "p50": round(worker_bench.percentile(gaps, 50), 2),
            "p99": round(worker_bench.percentile(gaps, 99), 2),
        },
        "all_done": outcome["all_done"],
    }


def print_summary(result: dict[str, Any]) -> None:
    print(f"{result['device']}: torch {result['torch']}, diffusers {result['diffusers']}")
    for arch, figures in result["archs"].items():
        print(
            f"\n{arch} {figures['size']}px, {figures['steps']} steps, guidance "
            f"{figures['guidance']} (built in {figures['build_s']} s)"
        )
        print(f"  {'case':<40}{'b1 img/s':>10}{'b4 img/s':>10}{'vs defaults':>13}{'peak GiB':>10}")
        for case, by_batch in figures["cases"].items():
            b1, b4 = by_batch["batch1"], by_batch["batch4"]
            peak = b4["peak_gib"] if b4["peak_gib"] is not None else "-"
            ratio = f"{b1['vs_defaults']}/{b4['vs_defaults']}"
            print(
                f"  {case:<40}{b1['images_per_s']:>10}{b4['images_per_s']:>10}{ratio:>13}{peak:>10}"
            )
        print(f"  compile warm-up: {figures['compile_warm_up_s']} s")
        cob = figures["cobatching"]
        print(
            f"  co-batching {cob['requests']} requests: x{cob['gain']} (vs solo: max "
            f"{cob['vs_solo_pixels']['max']}/255 on {cob['vs_solo_pixels']['share_differing']:.1%}"
            " of pixels)"
        )
        up = figures["upscale"]
        print(
            f"  upscale {up['from']}->{up['to']}: {up['tiles']} tiles of {up['tile']}, "
            f"{up['seconds']} s"
        )
        if "sdxl_decode" in figures:
            dec = figures["sdxl_decode"]
            print(
                f"  SDXL decode: fp32 upcast {dec['fp16_upcast_to_fp32_s']} s, bf16 "
                f"{dec['bf16_s']} s (x{dec['bf16_gain']})"
            )
    if result.get("worker"):
        w = result["worker"]
        print(
            f"\nworker ({w['model']}, {w['postprocess']}): {w['worker_jobs_per_s']} jobs/s vs bare "
            f"{w['bare_engine_jobs_per_s']} (x{w['worker_vs_bare']}); GPU idle gap p50 "
            f"{w['gpu_idle_gap_ms']['p50']} ms, p99 {w['gpu_idle_gap_ms']['p99']} ms"
        )
    print(f"\n{result['elapsed_s']} s in all; JSON in {result['out']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny models on the CPU (CI)")
    parser.add_argument("--archs", help="comma-separated (default: sd15,sd-turbo,sdxl)")
    parser.add_argument("--repeats", type=int, help="timed calls per case (median)")
    parser.add_argument("--compile", action="store_true", help="also torch.compile off CUDA")
    parser.add_argument("--worker-model", help="the model the worker run uses (default sd-turbo)")
    parser.add_argument("--worker-jobs", type=int, help="jobs in the worker run")
    parser.add_argument("--worker-images", type=int, default=4, help="images per worker job")
    parser.add_argument(
        "--post",
        choices=["real", "pngs"],
        default="real",
        help="the worker's post-processing: moderation + watermark + provenance, or PNGs only",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-gpu.json"))
    args = parser.parse_args(argv)
    table = QUICK if args.quick else FULL
    archs = args.archs.split(",") if args.archs else list(table)
    unknown = [a for a in archs if a not in table]
    if unknown:
        parser.error(f"unknown arch {', '.join(unknown)}; choose from {', '.join(table)}")
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.worker_jobs = args.worker_jobs or (2 if args.quick else 8)
    if args.quick:
        args.worker_images = min(args.worker_images, 1)
    worker_model = args.worker_model or archs[0 if args.quick else -1]
    if not args.quick and args.worker_model is None and "sd-turbo" in archs:
        worker_model = "sd-turbo"
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    if device.type == "cpu" and not args.quick:
        parser.error("no CUDA GPU here: the full run needs one; use --quick on a CPU")

    import diffusers

    started = time.perf_counter()
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "quick": args.quick,
        "repeats": args.repeats,
        "archs": {},
        "out": str(args.out),
    }
    result["worker"] = None
    for arch in archs:
        result["archs"][arch], engine = bench_arch(arch, args, device)
        if arch == worker_model:
            result["worker"] = bench_worker(engine, arch, args, device)
        del engine  # one model on the GPU at a time
        if device.type == "cuda":
            torch.cuda.empty_cache()
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(result, indent=2))
    print_summary(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
