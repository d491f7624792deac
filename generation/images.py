"""Safe decoding of images that come from users (init images, sketches, moderation and
provenance look-ups), shared by every entry point so bad files fail the same clear way.

Pillow's own decompression-bomb guard only warns below 2x its limit; we check the header's
size ourselves *before* decoding so a 20000x20000 PNG never allocates its pixels.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from generation.errors import UserInputError

# 40 megapixels: far more than any sane init image, far less than a bomb.
MAX_INPUT_PIXELS = 40_000_000
MAX_INPUT_BYTES = 50 * 1024 * 1024


def load_image(
    source: bytes | str | Path,
    *,
    max_pixels: int = MAX_INPUT_PIXELS,
    max_bytes: int = MAX_INPUT_BYTES,
    allow_animated: bool = False,
    what: str = "image",
) -> Image.Image:
    """Decode ``source`` to an RGB image or raise ``UserInputError`` saying why not."""
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
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise UserInputError(
            f"{what} is not a recognised image (PNG, JPEG, WebP, GIF, BMP are accepted)"
        ) from None
    except Image.DecompressionBombError as exc:
        raise UserInputError(_bomb_message(what, exc, max_pixels)) from None
    except OSError as exc:  # e.g. a JPEG cut off inside its header
        raise UserInputError(f"{what} is truncated or corrupt ({exc})") from None
    width, height = img.size
    if width <= 0 or height <= 0:
        raise UserInputError(f"{what} has no pixels ({width}x{height})")
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
