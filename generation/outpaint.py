"""Zoom Out, Pan and Vary (Region): the canvas, the repaint mask and the final composite.

Why pure functions apart from the engine: what is kept and what is repainted is geometry on
the source image, testable without a model; the engine only runs the inpainting pipeline at
the model's native size, and ``composite`` puts the kept pixels back at full resolution, so
everything farther than the feather from the repainted area is exactly the source.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from core.errors import UserInputError
from generation.request import MAX_ASPECT

PAN_DIRECTIONS = ("left", "right", "up", "down")
MIN_ZOOM, MAX_ZOOM = 1.1, 4.0
# A region side under 1/16 of the image's side is too small for the model to paint anything.
MIN_REGION_FRACTION = 1 / 16
# Seam width in px = the canvas's long side / FEATHER_DIVISOR (at least MIN_FEATHER): wide
# enough to hide the seam at any size, narrow enough to keep most of the source untouched.
FEATHER_DIVISOR = 32
MIN_FEATHER = 2
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)


@dataclass(frozen=True)
class CanvasSpec:
    """A parsed ``GenerationRequest.canvas``."""

    kind: str  # zoom | pan | region
    zoom: float = 1.0
    direction: str = ""
    region: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)


@dataclass(frozen=True)
class Canvas:
    """What one canvas request paints on and how the result goes back together."""

    image: Image.Image  # canvas size, RGB: the source placed, new border pre-filled
    mask: Image.Image  # "L", 255 = the pipeline repaints (reaches the feather into the kept area)
    alpha: Image.Image  # "L", weight of the generated image in the composite (0 = source exact)
    keep: Box  # where the (placed) source pixels are
    repaint_inside: bool  # True: the repainted area is ``keep``'s inside (region), else outside

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def _spec_error(spec: str, why: str) -> UserInputError:
    return UserInputError(
        f"canvas {spec!r}: {why}; allowed: zoom:<{MIN_ZOOM:g}-{MAX_ZOOM:g}> (e.g. zoom:2), "
        f"pan:{'|'.join(PAN_DIRECTIONS)}, region:x0,y0,x1,y1 (fractions 0-1 of the image)"
    )


def parse_canvas(spec: str | None) -> CanvasSpec:
    """Parse and check a canvas spec; the ``UserInputError`` names what is allowed."""
    if not isinstance(spec, str) or ":" not in spec:
        raise _spec_error(str(spec), "expected <kind>:<value>")
    kind, _, value = (part.strip().lower() for part in spec.partition(":"))
    if kind == "zoom":
        try:
            factor = float(value)
        except ValueError:
            raise _spec_error(spec, f"zoom factor {value!r} is not a number") from None
        if not (math.isfinite(factor) and MIN_ZOOM - 1e-9 <= factor <= MAX_ZOOM):
            raise _spec_error(spec, f"zoom factor must be between {MIN_ZOOM:g} and {MAX_ZOOM:g}")
        return CanvasSpec("zoom", zoom=factor)
    if kind == "pan":
        if value not in PAN_DIRECTIONS:
            raise _spec_error(spec, f"unknown pan direction {value!r}")
        return CanvasSpec("pan", direction=value)
    if kind == "region":
        return CanvasSpec("region", region=_parse_region(spec, value))
    raise _spec_error(spec, f"unknown canvas kind {kind!r}")


def _parse_region(spec: str, value: str) -> tuple[float, float, float, float]:
    try:
        x0, y0, x1, y1 = (float(v) for v in value.split(","))
    except ValueError:
        raise _spec_error(spec, "a region is four numbers x0,y0,x1,y1") from None
    if not all(0.0 <= v <= 1.0 for v in (x0, y0, x1, y1)):
        raise _spec_error(spec, "region fractions must be between 0 and 1")
    if x1 - x0 < MIN_REGION_FRACTION or y1 - y0 < MIN_REGION_FRACTION:
        raise _spec_error(
            spec,
            f"the region must be at least 1/{round(1 / MIN_REGION_FRACTION)} of the image on "
            "each side, with x0 < x1 and y0 < y1",
        )
    return x0, y0, x1, y1


def feather_px(size: tuple[int, int]) -> int:
    """The seam width for a canvas of ``size``: the model redraws it, the composite blends it."""
    return max(MIN_FEATHER, round(max(size) / FEATHER_DIVISOR))


def canvas_layout(
    source: tuple[int, int], spec: CanvasSpec, limits: Any
) -> tuple[tuple[int, int], Box]:
    """Canvas size and the box the source is placed in, without touching pixels (``resolve``
    sizes the generation from it). ``limits`` is ``settings.model``."""
    w, h = source
    if spec.kind == "region":
        return (w, h), _region_box(source, spec.region)
    if spec.kind == "zoom":
        iw, ih = max(1, round(w / spec.zoom)), max(1, round(h / spec.zoom))
        x0, y0 = (w - iw) // 2, (h - ih) // 2
        return (w, h), (x0, y0, x0 + iw, y0 + ih)
    wide = spec.direction in ("left", "right")
    cw, ch = (w + w // 2, h) if wide else (w, h + h // 2)
    if max(cw, ch) > MAX_ASPECT * min(cw, ch):
        shape, instead = ("wider", "up or down") if wide else ("taller", "left or right")
        raise UserInputError(
            f"the image is {w}x{h}; panning {spec.direction} would make it {shape} than "
            f"{MAX_ASPECT:g}:1; pan {instead} instead"
        )
    max_side = int(limits.max_side)
    scale = min(1.0, max_side / max(cw, ch))
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    # The side along the pan from the rounded source, so the source fits it exactly.
    cw, ch = (
        (min(max_side, round(cw * scale)), sh) if wide else (sw, min(max_side, round(ch * scale)))
    )
    x0 = cw - sw if spec.direction == "left" else 0
    y0 = ch - sh if spec.direction == "up" else 0
    return (cw, ch), (x0, y0, x0 + sw, y0 + sh)


def _region_box(source: tuple[int, int], region: tuple[float, float, float, float]) -> Box:
    w, h = source
    x0, y0, x1, y1 = region
    return round(x0 * w), round(y0 * h), round(x1 * w), round(y1 * h)


def build_canvas(source: Image.Image, spec: str | CanvasSpec, limits: Any) -> Canvas:
    """The canvas of a zoom, pan or region request on ``source`` (the full-size image)."""
    parsed = parse_canvas(spec) if isinstance(spec, str) else spec
    source = source.convert("RGB")
    size, keep = canvas_layout(source.size, parsed, limits)
    x0, y0, x1, y1 = keep
    inside = parsed.kind == "region"
    if inside:
        image = source.copy()
    else:
        placed = source
        if placed.size != (x1 - x0, y1 - y0):
            placed = source.resize((x1 - x0, y1 - y0), Image.Resampling.LANCZOS)
        image = _fill_border(placed, size, keep)
    distance = _distance(size, keep, inside=inside)
    feather = feather_px(size)
    mask = np.where(distance <= feather, 255, 0).astype(np.uint8)
    # Smoothstep from 1 on the repainted area to 0 at the feather's edge: a Gaussian-like
    # blend whose support ends exactly at the feather, so the rest stays the source.
    t = np.clip(1.0 - distance / feather, 0.0, 1.0)
    alpha = np.rint(255 * t * t * (3 - 2 * t)).astype(np.uint8)
    return Canvas(
        image=image,
        mask=Image.fromarray(mask, "L"),
        alpha=Image.fromarray(alpha, "L"),
        keep=keep,
        repaint_inside=inside,
    )


def _distance(size: tuple[int, int], keep: Box, *, inside: bool) -> np.ndarray:
    """Distance in px of each pixel from the repainted area (0 on it).

    The repainted area is ``keep``'s inside for a region, its outside for zoom and pan; both
    are rectangles, so the distance is exact without a distance transform.
    """
    w, h = size
    x0, y0, x1, y1 = keep
    xs = np.arange(w, dtype=np.float32)[None, :] + 0.5
    ys = np.arange(h, dtype=np.float32)[:, None] + 0.5
    if inside:  # outside the box: Euclidean distance to it
        dx = np.maximum(np.maximum(x0 - xs, xs - x1), 0.0)
        dy = np.maximum(np.maximum(y0 - ys, ys - y1), 0.0)
        return np.sqrt(dx * dx + dy * dy)
    # Inside the box: distance to its nearest side, but a side on the canvas's edge borders
    # nothing repainted (a pan keeps three of the source's sides on the edge).
    far = np.float32(w + h)
    dx = np.minimum(xs - x0 if x0 > 0 else far, x1 - xs if x1 < w else far)
    dy = np.minimum(ys - y0 if y0 > 0 else far, y1 - ys if y1 < h else far)
    d = np.minimum(dx, dy)
    outside = (xs < x0) | (xs > x1) | (ys < y0) | (ys > y1)
    return np.where(outside, 0.0, np.maximum(d, 0.0)).astype(np.float32)


def _fill_border(placed: Image.Image, size: tuple[int, int], keep: Box) -> Image.Image:
    """The source on the canvas, the new border its edges stretched outwards and blurred: a
    start in the source's colours for an inpainting model, not a flat grey it has to undo."""
    w, h = size
    x0, y0, x1, y1 = keep
    arr = np.asarray(placed)
    padded = np.pad(arr, ((y0, h - y1), (x0, w - x1), (0, 0)), mode="edge")
    blurred = Image.fromarray(padded, "RGB").filter(
        ImageFilter.GaussianBlur(max(2, max(size) // 16))
    )
    blurred.paste(placed, (x0, y0))
    return blurred


def composite(canvas: Canvas, generated: Image.Image) -> Image.Image:
    """The generated image (made at the generation size) at canvas size, blended over the
    canvas by the feathered mask: the kept pixels stay the source's at full resolution."""
    painted = generated.convert("RGB")
    if painted.size != canvas.size:
        painted = painted.resize(canvas.size, Image.Resampling.LANCZOS)
    return Image.composite(painted, canvas.image, canvas.alpha)
