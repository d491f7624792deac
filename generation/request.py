"""What a user asked for, and the checks that turn it into something safe to run.

``GenerationRequest`` is the one shape every entry point (slash command, buttons, CLI, queue
rows) produces, so validation lives here once: a request that passes ``resolve`` has every
field filled in, rounded and bounded, and a bad one raises ``UserInputError`` whose message
names the problem and the allowed range (it is shown to the user verbatim).
"""

from __future__ import annotations

import dataclasses
import math
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from core.errors import UserInputError
from generation.prompt_weights import check_weights

KINDS = ("imagine", "variation", "upscale", "reroll", "zoom", "pan", "region", "blend")
# Kinds that repaint part of a canvas built from ``init_image`` (``generation/outpaint.py``).
CANVAS_KINDS = ("zoom", "pan", "region")
# Request scheduler name -> A1111 "Sampler" name (what people paste into other tools).
SCHEDULERS = {
    "euler": "Euler",
    "euler_a": "Euler a",
    "dpm++": "DPM++ 2M",
    "dpm++_karras": "DPM++ 2M Karras",
    "ddim": "DDIM",
    "unipc": "UniPC",
    "lcm": "LCM",
}
MAX_SEED = 2**32 - 1
MIN_SIDE = 32
MAX_ASPECT = 4.0  # 4:1 either way; beyond that diffusion models repeat themselves
MAX_GUIDANCE = 30.0
SIZE_MULTIPLE = 8


@dataclass(frozen=True)
class ModelDefaults:
    """Per-family defaults (SD1.5, SDXL, Turbo, tiny...) used where a request leaves a field out."""

    family: str
    size: int  # side of the square default image, px
    steps: int
    guidance: float
    scheduler: str


@dataclass(frozen=True)
class GenerationRequest:
    """One /imagine (or derived) request; ``None`` fields take the model's defaults."""

    prompt: str
    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None
    aspect_ratio: str | None = None
    steps: int | None = None
    guidance: float | None = None
    scheduler: str | None = None
    seed: int | None = None
    count: int = 4
    init_image: Image.Image | None = field(default=None, repr=False, compare=False)
    strength: float = 0.75
    kind: str = "imagine"
    # Zoom Out / Pan / Vary (Region): how the canvas is built from ``init_image`` and which part
    # of it is repainted: "zoom:2", "zoom:1.5", "pan:left|right|up|down" or
    # "region:x0,y0,x1,y1" (fractions of the source image). None for every other kind.
    canvas: str | None = None
    tile: bool = False  # --tile: seamless, the image wraps around left/right and top/bottom
    chaos: int = 0  # --chaos 0-100: how far apart the images of one grid may wander
    # /blend: the images that steer the model through the IP-Adapter (generation/blend.py).
    references: tuple[Image.Image, ...] = field(default=(), repr=False, compare=False)

    def replace(self, **changes: Any) -> GenerationRequest:
        return dataclasses.replace(self, **changes)

    @property
    def seeds(self) -> list[int]:
        """One seed per image (seed, seed+1, ...), so any single image can be re-made alone."""
        if self.seed is None:
            raise ValueError("seeds of an unresolved request (seed is None)")
        return [(self.seed + i) % (MAX_SEED + 1) for i in range(self.count)]

    def to_params(self, *, init_image_path: str | Path | None = None) -> dict[str, Any]:
        """A JSON-safe dict for the job store; an init image is saved to ``init_image_path``."""
        params = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("init_image", "references")
        }
        params["init_image"] = None
        if self.init_image is None and not self.references:
            return params
        if init_image_path is None:
            raise ValueError("a request with images needs init_image_path to be serialised")
        path = Path(init_image_path)
        if self.init_image is not None:
            params["init_image"] = _saved(self.init_image, path)
        if self.references:  # beside it: <job>_ref0.png, <job>_ref1.png, ...
            params["references"] = [
                _saved(image, path.with_name(f"{path.stem}_ref{k}.png"))
                for k, image in enumerate(self.references)
            ]
        return params

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> GenerationRequest:
        """Rebuild a request from ``to_params()`` output (the init image is re-read from its file)."""
        from core.images import load_image

        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - names)
        if unknown:
            raise UserInputError(
                f"unknown request fields: {', '.join(unknown)}; allowed: {', '.join(sorted(names))}"
            )
        values = dict(params)
        path = values.pop("init_image", None)
        if path is not None:
            values["init_image"] = load_image(path, what="init image")
        values["references"] = tuple(
            load_image(p, what=f"/blend image {k + 1}")
            for k, p in enumerate(values.pop("references", None) or [])
        )
        if "prompt" not in values:
            raise UserInputError("request has no prompt")
        return cls(**values)


def _saved(image: Image.Image, path: Path) -> str:
    """``image`` as a PNG at ``path`` (kept when it exists: a replayed job saves nothing twice)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, format="PNG")
    return str(path)


def parse_aspect_ratio(text: str) -> float:
    """``"16:9"`` -> 1.777...; rejects junk and ratios past 4:1 with a clear message."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*[:x/]\s*(\d+(?:\.\d+)?)\s*", str(text))
    if not match:
        raise UserInputError(
            f"aspect ratio {text!r} is not of the form W:H (for example 16:9 or 2:3)"
        )
    w, h = float(match.group(1)), float(match.group(2))
    if w <= 0 or h <= 0:
        raise UserInputError(f"aspect ratio {text} must have both sides above 0 (for example 16:9)")
    ratio = w / h
    if ratio > MAX_ASPECT or ratio < 1 / MAX_ASPECT:
        raise UserInputError(
            f"aspect ratio {text} is too extreme; allowed range is 1:{MAX_ASPECT:g} to {MAX_ASPECT:g}:1"
        )
    return ratio


def _round8(value: float) -> int:
    return max(SIZE_MULTIPLE, int(round(value / SIZE_MULTIPLE)) * SIZE_MULTIPLE)


def _check_int(name: str, value: Any, low: int, high: int, unit: str = "") -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value != int(value)
    ):
        raise UserInputError(
            f"{name} must be a whole number between {low} and {high}{unit}, got {value!r}"
        )
    value = int(value)
    if not low <= value <= high:
        raise UserInputError(f"{name} is {value}{unit}; allowed range is {low} to {high}{unit}")
    return value


def _check_float(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserInputError(f"{name} must be a number between {low:g} and {high:g}, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise UserInputError(
            f"{name} must be a finite number between {low:g} and {high:g}, got {value}"
        )
    if not low <= value <= high:
        raise UserInputError(f"{name} is {value:g}; allowed range is {low:g} to {high:g}")
    return value


def _resolve_size(
    req: GenerationRequest, defaults: ModelDefaults, limits: Any, ratio: float | None = None
) -> tuple[int, int]:
    """``ratio``: the aspect a default size takes (a canvas's), before the request's own."""
    max_side = int(limits.max_side)
    for name in ("width", "height"):
        value = getattr(req, name)
        if value is not None:
            _check_int(name, value, MIN_SIDE, max_side, " px")
    if req.aspect_ratio is not None and req.width is not None and req.height is not None:
        raise UserInputError("give either an aspect ratio or a width and height, not both")
    base = int(limits.default_size or defaults.size)
    if req.width is not None and req.height is not None:
        width, height = float(req.width), float(req.height)
        ratio = width / height
        if ratio > MAX_ASPECT or ratio < 1 / MAX_ASPECT:
            raise UserInputError(
                f"size {req.width}x{req.height} is too extreme; width:height must be between "
                f"1:{MAX_ASPECT:g} and {MAX_ASPECT:g}:1"
            )
    else:
        if ratio is None:
            ratio = _request_ratio(req)
        if req.width is not None:
            width, height = float(req.width), req.width / ratio
        elif req.height is not None:
            width, height = req.height * ratio, float(req.height)
        else:
            # Keep the area of the default square so every ratio costs about the same.
            width, height = base * math.sqrt(ratio), base / math.sqrt(ratio)
    if min(width, height) < MIN_SIDE - SIZE_MULTIPLE / 2 and (req.width or req.height):
        raise UserInputError(
            f"{req.width or req.height} px with aspect ratio {req.aspect_ratio} gives a side of "
            f"{min(width, height):.0f} px; the minimum is {MIN_SIDE} px"
        )
    width, height = _round8(max(width, MIN_SIDE)), _round8(max(height, MIN_SIDE))
    # Shrink (keeping the ratio) rather than fail when a ratio pushes one side past the limits.
    scale = min(1.0, max_side / max(width, height), math.sqrt(limits.max_pixels / (width * height)))
    if scale < 1.0:
        if req.width is not None and req.height is not None:
            raise UserInputError(
                f"size {req.width}x{req.height} is {req.width * req.height / 1e6:.2f} megapixels; "
                f"the limit is {limits.max_pixels / 1e6:.2f} megapixels (for example "
                f"{int(math.isqrt(limits.max_pixels)) // 8 * 8}x{int(math.isqrt(limits.max_pixels)) // 8 * 8})"
            )
        width = max(MIN_SIDE, int(width * scale) // SIZE_MULTIPLE * SIZE_MULTIPLE)
        height = max(MIN_SIDE, int(height * scale) // SIZE_MULTIPLE * SIZE_MULTIPLE)
    # Rounding can nudge a 4:1 request just past 4:1; trim the long side so that a resolved
    # request always passes validation again.
    limit = lambda short: int(short * MAX_ASPECT) // SIZE_MULTIPLE * SIZE_MULTIPLE  # noqa: E731
    return min(width, limit(height)), min(height, limit(width))


def _request_ratio(req: GenerationRequest) -> float:
    if req.aspect_ratio is not None:
        return parse_aspect_ratio(req.aspect_ratio)
    if req.init_image is not None:
        ratio = req.init_image.width / req.init_image.height
        return min(max(ratio, 1 / MAX_ASPECT), MAX_ASPECT)
    return 1.0


def _canvas_ratio(req: GenerationRequest, limits: Any) -> float | None:
    """A canvas request's aspect (its output's), checking its spec; None for other kinds.

    The generation size takes this aspect at the model's native area, not the canvas's size:
    a model paints best at its own size, and the source is composited back at full resolution.
    """
    if req.kind not in CANVAS_KINDS:
        return None
    from generation.outpaint import canvas_layout, parse_canvas

    if not isinstance(req.init_image, Image.Image):
        raise UserInputError(f"a {req.kind} needs the image to {req.kind} (init_image)")
    spec = parse_canvas(req.canvas)
    if spec.kind != req.kind:
        raise UserInputError(f"a {req.kind} request has a {spec.kind} canvas ({req.canvas!r})")
    (width, height), _ = canvas_layout(req.init_image.size, spec, limits)
    return width / height


def resolve(req: GenerationRequest, defaults: ModelDefaults, limits: Any) -> GenerationRequest:
    """Fill defaults, round and bound every field; ``limits`` is ``settings.model``."""
    if not isinstance(req.prompt, str):
        raise UserInputError("prompt must be text")
    prompt = req.prompt.strip()
    max_chars = int(limits.max_prompt_chars)
    if not prompt:
        raise UserInputError(
            f"prompt is empty; write 1 to {max_chars} characters describing the image"
        )
    if len(prompt) > max_chars:
        raise UserInputError(
            f"prompt is {len(prompt)} characters long; the limit is {max_chars} characters"
        )
    check_weights(prompt)
    negative = (req.negative_prompt or "").strip()
    if len(negative) > max_chars:
        raise UserInputError(
            f"negative prompt is {len(negative)} characters long; the limit is {max_chars} characters"
        )
    if req.kind not in KINDS:
        raise UserInputError(f"unknown request kind {req.kind!r}; allowed: {', '.join(KINDS)}")
    if req.kind not in CANVAS_KINDS:
        # Carried over from a canvas parent (an upscale or variation of a zoom's image): the
        # new request works on its own init image, not on the parent's canvas.
        req = req.replace(canvas=None)
    width, height = _resolve_size(req, defaults, limits, _canvas_ratio(req, limits))
    steps = req.steps if req.steps is not None else (limits.default_steps or defaults.steps)
    steps = _check_int("steps", steps, 1, int(limits.max_steps))
    guidance = req.guidance if req.guidance is not None else limits.default_guidance
    guidance = _check_float(
        "guidance", defaults.guidance if guidance is None else guidance, 0.0, MAX_GUIDANCE
    )
    scheduler = (req.scheduler or defaults.scheduler).strip().lower()
    if scheduler not in SCHEDULERS:
        raise UserInputError(
            f"unknown scheduler {req.scheduler!r}; choose one of: {', '.join(SCHEDULERS)}"
        )
    seed = req.seed if req.seed is not None else secrets.randbelow(MAX_SEED + 1)
    seed = _check_int("seed", seed, 0, MAX_SEED)
    count = _check_int("image count", req.count, 1, int(limits.max_count))
    strength = _check_float("strength", req.strength, 0.0, 1.0)
    if not isinstance(req.tile, bool):
        raise UserInputError(f"tile must be true or false, got {req.tile!r}")
    chaos = _check_int("chaos", req.chaos, 0, 100)
    if req.init_image is not None:
        if not isinstance(req.init_image, Image.Image):
            raise UserInputError(
                "init image must be an image (load it with core.images.load_image)"
            )
        if strength <= 0.0:
            raise UserInputError("strength must be above 0 (up to 1.0) when an init image is given")
        if int(steps * strength) < 1:
            raise UserInputError(
                f"steps x strength is {steps} x {strength:g} < 1, so nothing would change; "
                f"use at least {math.ceil(1 / strength)} steps or a higher strength"
            )
    _check_references(req)
    return req.replace(
        prompt=prompt,
        negative_prompt=negative,
        width=width,
        height=height,
        aspect_ratio=None,  # now carried by width x height, so validating again changes nothing
        steps=steps,
        guidance=guidance,
        scheduler=scheduler,
        seed=seed,
        count=count,
        strength=strength,
        chaos=chaos,
    )


def _check_references(req: GenerationRequest) -> None:
    """/blend's images: 2 to 5 images for a blend (kept by its rerolls), never beside an init
    image (a blend starts from noise)."""
    refs = req.references or ()
    if not all(isinstance(r, Image.Image) for r in refs):
        raise UserInputError("blend images must be images (load them with core.images.load_image)")
    if req.kind == "blend" and not 2 <= len(refs) <= 5:
        raise UserInputError(f"/blend takes 2 to 5 images, not {len(refs)}")
    if len(refs) > 5:
        raise UserInputError(f"a blend takes at most 5 images, not {len(refs)}")
    if refs and req.init_image is not None:
        raise UserInputError("a blend starts from its images alone; it takes no init image")


def infotext(
    req: GenerationRequest, seed: int, model: str, size: tuple[int, int] | None = None
) -> str:
    """The A1111 "parameters" text, so images open with their settings in other tools.

    ``size``: the image's, where it is not the generation's (a zoom's canvas)."""
    width, height = size or (req.width, req.height)
    lines = [req.prompt]
    if req.negative_prompt:
        lines.append(f"Negative prompt: {req.negative_prompt}")
    fields = [
        f"Steps: {req.steps}",
        f"Sampler: {SCHEDULERS.get(req.scheduler or '', req.scheduler)}",
        f"CFG scale: {req.guidance:g}" if req.guidance is not None else None,
        f"Seed: {seed}",
        f"Size: {width}x{height}",
        f"Model: {model}",
        f"Denoising strength: {req.strength:g}" if req.init_image is not None else None,
        f"Canvas: {req.canvas}" if req.canvas is not None else None,
        "Tiling: True" if req.tile else None,  # A1111's own field, so the setting travels too
    ]
    lines.append(", ".join(f for f in fields if f))
    return "\n".join(lines)
