"""CLI subcommands of the generation engine: generate, upscale, vary (no Discord needed).

They let an admin try a model offline before inviting the bot, and they are how the
done-when checks (same seed -> same pixels) are run by hand.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

TINY_NOTE = (
    "--model tiny is a built-in random model for offline tests: it makes noise, not pictures."
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``generate``, ``upscale`` and ``vary`` to the ``imagine-bot`` parser."""
    gen = sub.add_parser(
        "generate",
        help="make images from a prompt, offline",
        description="Make images from a prompt on this machine and save them as PNGs. " + TINY_NOTE,
    )
    gen.add_argument("prompt", help="what to draw")
    _model_args(gen)
    gen.add_argument("--seed", type=int, help="seed of the first image (image i uses seed+i)")
    gen.add_argument("--ar", dest="aspect_ratio", metavar="W:H", help="aspect ratio, e.g. 16:9")
    gen.add_argument("--width", type=int, help="width in px (rounded to a multiple of 8)")
    gen.add_argument("--height", type=int, help="height in px (rounded to a multiple of 8)")
    gen.add_argument("--steps", type=int, help="denoising steps (default: the model family's)")
    gen.add_argument("--guidance", type=float, help="CFG scale (default: the model family's)")
    gen.add_argument("--scheduler", help="euler, euler_a, dpm++, dpm++_karras, ddim, unipc, lcm")
    gen.add_argument("--count", type=int, default=4, help="number of images (default 4)")
    gen.add_argument("--negative", default="", help="negative prompt: what to avoid")
    gen.add_argument("--init", metavar="IMAGE", help="init image or sketch to start from")
    gen.add_argument("--strength", type=float, default=0.75, help="how much to change --init (0-1)")
    _output_args(gen, "imagine.png")
    gen.set_defaults(handler=_generate)

    up = sub.add_parser(
        "upscale",
        help="2x upscale an image with the model",
        description="Upscale an image 2x (Lanczos, then light diffusion to add detail). "
        + TINY_NOTE,
    )
    up.add_argument("image", help="PNG/JPEG/WebP to upscale")
    _model_args(up)
    up.add_argument("--seed", type=int)
    up.add_argument(
        "--prompt", help="prompt guiding the detail (default: the one stored in the PNG)"
    )
    _output_args(up, "upscaled.png")
    up.set_defaults(handler=_upscale)

    vary = sub.add_parser(
        "vary",
        help="variations of an image",
        description="Make variations of an image (image-to-image with a new seed). " + TINY_NOTE,
    )
    vary.add_argument("image", help="PNG/JPEG/WebP to vary")
    _model_args(vary)
    vary.add_argument("--strong", action="store_true", help="strong variation (default subtle)")
    vary.add_argument("--prompt", help="prompt (default: the one stored in the PNG)")
    vary.add_argument("--seed", type=int)
    vary.add_argument("--count", type=int, default=4)
    _output_args(vary, "variation.png")
    vary.set_defaults(handler=_vary)


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", help="hub id, diffusers folder, .safetensors/.ckpt file, or tiny"
    )
    parser.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"])


def _output_args(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "-o",
        "--output",
        default=default,
        help=f"output PNG (default {default}); singles get _1, _2...",
    )
    parser.add_argument("--json", action="store_true", help="print metadata as JSON on stdout")


def _settings(args: argparse.Namespace):
    from core.config import load_settings

    model: dict[str, Any] = {}
    if args.model:
        model["name"] = args.model
    if args.device:
        model["device"] = args.device
    return load_settings(args.config, **({"model": model} if model else {}))


def _engine(args: argparse.Namespace):
    from transformers.utils import logging as transformers_logging

    # transformers warns about optional image processors (torchvision) we never use.
    transformers_logging.set_verbosity_error()
    from generation.engine import Engine

    settings = _settings(args)
    started = time.perf_counter()
    engine = Engine.load(settings)
    return engine, time.perf_counter() - started


def _precheck(req: Any, args: argparse.Namespace) -> None:
    """Reject bad options before loading a model (which can take minutes): the checks that do
    not depend on the model family run here, the rest when the engine validates."""
    from generation.request import ModelDefaults, resolve

    limits = _settings(args).model
    generic = ModelDefaults(
        family="any", size=512, steps=min(30, limits.max_steps), guidance=7.0, scheduler="euler"
    )
    resolve(req, generic, limits)


class _Bar:
    """A tqdm bar on stderr fed by the engine's per-step progress events."""

    def __init__(self, desc: str, total: int | None = None) -> None:
        from tqdm import tqdm

        self.bar = tqdm(desc=desc, total=total, unit="step", file=sys.stderr, leave=False)

    def __call__(self, event: Any) -> None:
        if self.bar.total != event.total:
            self.bar.reset(total=event.total)
        self.bar.n = event.step
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _denoising_steps(req: Any) -> int:
    """Image-to-image runs only the last steps x strength steps."""
    return max(1, int(req.steps * req.strength)) if req.init_image is not None else req.steps


def save_result(result: Any, output: str | Path) -> list[Path]:
    """Write the grid to ``output`` and each image to ``output_1.png``..., with A1111 parameters."""
    from PIL.PngImagePlugin import PngInfo

    out = Path(output)
    if out.suffix.lower() != ".png":
        out = out.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)

    def info(index: int) -> PngInfo:
        png = PngInfo()
        png.add_text("parameters", result.infotext(index))
        return png

    paths = [out]
    result.grid.save(out, pnginfo=info(0))
    if len(result.images) > 1:
        for i, img in enumerate(result.images, start=1):
            path = out.with_name(f"{out.stem}_{i}{out.suffix}")
            img.save(path, pnginfo=info(i - 1))
            paths.append(path)
    return paths


def _report(
    args: argparse.Namespace, result: Any, paths: list[Path], timings: dict[str, float]
) -> None:
    if args.json:
        meta = result.metadata()
        meta["timings"] = {**meta["timings"], **{k: round(v, 4) for k, v in timings.items()}}
        meta["files"] = [str(p) for p in paths]
        print(json.dumps(meta, indent=2))
    else:
        print(
            f"saved {', '.join(str(p) for p in paths)} (seeds {', '.join(map(str, result.seeds))})"
        )


def _generate(args: argparse.Namespace) -> int:
    from core.images import load_image
    from generation.request import GenerationRequest

    init = load_image(args.init, what="init image") if args.init else None
    req = GenerationRequest(
        prompt=args.prompt,
        negative_prompt=args.negative,
        width=args.width,
        height=args.height,
        aspect_ratio=args.aspect_ratio,
        steps=args.steps,
        guidance=args.guidance,
        scheduler=args.scheduler,
        seed=args.seed,
        count=args.count,
        init_image=init,
        strength=args.strength,
    )
    _precheck(req, args)
    engine, load_s = _engine(args)
    return _generate_and_report(args, engine, engine.validate(req), "generate", load_s)


def _stored_prompt(path: str) -> tuple[str, str]:
    """Prompt and negative prompt from an A1111 "parameters" PNG chunk, if the image has one."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            text = img.info.get("parameters", "")
    except OSError:
        return "", ""
    lines = text.splitlines()
    if not lines:
        return "", ""
    negative = ""
    prompt_lines = []
    for line in lines[:-1] if len(lines) > 1 else lines:
        if line.startswith("Negative prompt:"):
            negative = line.removeprefix("Negative prompt:").strip()
        else:
            prompt_lines.append(line)
    prompt = "\n".join(prompt_lines)
    if re.match(r"^Steps: \d+", prompt):
        prompt = ""
    return prompt, negative


def _parent(args: argparse.Namespace, image_path: str, fallback: str | None):
    from core.errors import UserInputError
    from generation.request import GenerationRequest

    prompt, negative = _stored_prompt(image_path)
    prompt = args.prompt or prompt or fallback
    if not prompt:
        raise UserInputError(f"{image_path} carries no prompt; give one with --prompt")
    return GenerationRequest(
        prompt=prompt, negative_prompt=negative, count=getattr(args, "count", 1)
    )


def _upscale(args: argparse.Namespace) -> int:
    from core.images import load_image

    image = load_image(args.image, what="image to upscale")
    parent = _parent(args, args.image, fallback="high quality, detailed")
    engine, load_s = _engine(args)
    started = time.perf_counter()
    result = engine.upscale(
        image, engine.validate(parent.replace(width=None, height=None)), seed=args.seed
    )
    timings = {"load_s": load_s, "generate_s": time.perf_counter() - started}
    _report(args, result, save_result(result, args.output), timings)
    return 0


def _vary(args: argparse.Namespace) -> int:
    from core.images import load_image

    image = load_image(args.image, what="image to vary")
    parent = _parent(args, args.image, fallback=None)
    engine, load_s = _engine(args)
    req = engine.variation_request(parent, image, strong=args.strong, seed=args.seed)
    return _generate_and_report(args, engine, req, "vary", load_s)


def _generate_and_report(
    args: argparse.Namespace, engine: Any, req: Any, label: str, load_s: float
) -> int:
    bar = _Bar(label, _denoising_steps(req))
    started = time.perf_counter()
    try:
        result = engine.generate([req], progress=bar)[0]
    finally:
        bar.close()
    timings = {"load_s": load_s, "generate_s": time.perf_counter() - started}
    _report(args, result, save_result(result, args.output), timings)
    return 0
