"""Safe decoding of images that come from users (init images, sketches, moderation and
provenance look-ups), shared by every entry point so bad files fail the same clear way.

Pillow's own decompression-bomb guard only warns below 2x its limit; we check the header's
size ourselves *before* decoding so a 20000x20000 PNG never allocates its pixels. With a
``target_pixels`` (the model's size), a JPEG is decoded straight at a reduced scale
(``Image.draft``, so a 48 MP phone photo costs what a 3 MP one does) and any image is scaled
down to about that size right after decoding: nothing downstream (gate, PNG encode on the
prepare thread, the engine) handles more pixels than the model uses. ``decode_upload`` also
bounds how many uploads decode at once, so a burst of them cannot take all memory or threads.
"""

from __future__ import annotations

import asyncio
import io
import math
import re
import weakref
from collections.abc import Collection
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from core.errors import UserInputError

# 40 megapixels: far more than any sane init image, far less than a bomb. The bot's uploads
# use the lower ``uploads.max_pixels`` setting.
MAX_INPUT_PIXELS = 40_000_000
MAX_INPUT_BYTES = 50 * 1024 * 1024
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")


def load_image(
    source: bytes | str | Path,
    *,
    max_pixels: int = MAX_INPUT_PIXELS,
    max_bytes: int = MAX_INPUT_BYTES,
    allow_animated: bool = False,
    what: str = "image",
    formats: Collection[str] | None = None,
    target_pixels: int | None = None,
) -> Image.Image:
    """Decode ``source`` to an RGB image or raise ``UserInputError`` saying why not.

    ``formats``: the only formats opened (Pillow names: PNG, JPEG, ...). ``target_pixels``:
    decode and keep about this many pixels (never fewer), however large the file is.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise UserInputError(f"{what} file {path} does not exist") from None
        except OSError as exc:
            raise UserInputError(f"cannot read {what} file {path}: {exc.strerror}") from None
        if path.is_dir():
            raise UserInputError(f"{what} {path} is a folder, not an image file")
        if size > max_bytes:
            raise UserInputError(
                f"{what} file is {size / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.0f} MiB"
            )
        data = path.read_bytes()
    else:
        data = bytes(source)
        if len(data) > max_bytes:
            raise UserInputError(
                f"{what} is {len(data) / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.0f} MiB"
            )
    if not data:
        raise UserInputError(f"{what} is empty (0 bytes)")
    accepted = tuple(f.upper() for f in formats) if formats else FORMATS
    try:
        img = Image.open(io.BytesIO(data), formats=list(accepted) if formats else None)
    except UnidentifiedImageError:
        raise UserInputError(
            f"{what} is not a recognised image ({', '.join(accepted)} are accepted)"
        ) from None
    except Image.DecompressionBombError as exc:
        raise UserInputError(_bomb_message(what, exc, max_pixels)) from None
    except OSError as exc:  # e.g. a JPEG cut off inside its header
        raise UserInputError(f"{what} is truncated or corrupt ({exc})") from None
    width, height = img.size
    if width <= 0 or height <= 0:
        raise UserInputError(f"{what} has no pixels ({width}x{height})")
    if target_pixels and img.format == "JPEG" and width * height > target_pixels:
        # Decode at 1/2, 1/4 or 1/8 scale, the smallest that still covers the target.
        scale = math.sqrt(target_pixels / (width * height))
        img.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
        width, height = img.size
    if width * height > max_pixels:
        raise UserInputError(
            f"{what} is {width}x{height} ({width * height / 1e6:.0f} megapixels); "
            f"the limit is {max_pixels / 1e6:.0f} megapixels"
        )
    if getattr(img, "is_animated", False) and not allow_animated:
        raise UserInputError(f"{what} is animated; upload a still image (PNG, JPEG or WebP)")
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserInputError(f"{what} is truncated or corrupt ({exc})") from None
    except Image.DecompressionBombError as exc:
        raise UserInputError(_bomb_message(what, exc, max_pixels)) from None
    if target_pixels and width * height > target_pixels:
        scale = math.sqrt(target_pixels / (width * height))
        size = (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale)))
        img = img.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
    if img.mode == "RGBA" or img.mode == "LA" or (img.mode == "P" and "transparency" in img.info):
        # Flatten transparency on white, as sketches are usually drawn on transparent canvases.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def _bomb_message(what: str, exc: Exception, max_pixels: int) -> str:
    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = f" ({int(found.group(1)) / 1e6:.0f} megapixels)" if found else ""
    return (
        f"{what} is too large to decode safely{size}; "
        f"the limit is {max_pixels / 1e6:.0f} megapixels"
    )


_decode_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


async def decode_upload(
    data: bytes,
    *,
    concurrency: int,
    **limits: object,
) -> Image.Image:
    """``load_image`` in a thread, at most ``concurrency`` at once per event loop (the rest
    wait here, not in the thread pool where they would block everyone else's work)."""
    loop = asyncio.get_running_loop()
    slots = _decode_slots.get(loop)
    if slots is None:
        slots = _decode_slots[loop] = asyncio.Semaphore(concurrency)
    async with slots:
        return await asyncio.to_thread(lambda: load_image(data, **limits))  # type: ignore[arg-type]
