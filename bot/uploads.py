"""Images users attach, checked in order of cost: what Discord tells us (size, type, pixel
dimensions) before downloading, the file's header before decoding, then a bounded decode
straight to the model's size (``core.images.decode_upload``).

The cap slot is already reserved when this runs (``bot/accept.py``), so a user over their cap
never makes the bot download or decode anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord

from core.errors import UserInputError
from core.images import decode_upload

if TYPE_CHECKING:
    from PIL import Image

    from core.config import Settings

# Pillow format name -> the content type Discord reports for it.
CONTENT_TYPES = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
}


async def read_upload(
    attachment: discord.Attachment, settings: Settings, *, what: str = "the attached image"
) -> Image.Image:
    """The attachment decoded to RGB at about the model's size, or a ``UserInputError``."""
    data = await download_upload(attachment, settings, what=what)
    limits = settings.uploads
    return await decode_upload(
        data,
        concurrency=limits.concurrent_decodes,
        max_pixels=limits.max_pixels,
        max_bytes=limits.max_bytes,
        formats=limits.formats,
        target_pixels=settings.model.max_pixels,
        what=what,
    )


async def download_upload(
    attachment: discord.Attachment, settings: Settings, *, what: str = "the attached image"
) -> bytes:
    """The attachment's bytes, after every check Discord's metadata allows."""
    limits = settings.uploads
    names = ", ".join(limits.formats)
    if attachment.size > limits.max_bytes:
        raise UserInputError(
            f"{what} is {attachment.size / 2**20:.1f} MiB; "
            f"the limit is {limits.max_bytes / 2**20:.0f} MiB"
        )
    content_type = (attachment.content_type or "").split(";")[0].strip().lower()
    allowed = {CONTENT_TYPES.get(f.upper(), f"image/{f.lower()}") for f in limits.formats}
    if content_type and content_type not in allowed:
        raise UserInputError(
            f"the attachment {attachment.filename!r} is {content_type}, "
            f"not an image this bot accepts ({names})"
        )
    width, height = attachment.width or 0, attachment.height or 0
    if content_type != "image/jpeg" and width * height > limits.max_pixels:
        # JPEGs are decoded at a reduced scale, so only their header decides (after draft).
        raise UserInputError(
            f"{what} is {width}x{height} ({width * height / 1e6:.0f} megapixels); "
            f"the limit is {limits.max_pixels / 1e6:.0f} megapixels"
        )
    try:
        return await attachment.read()
    except discord.HTTPException as exc:
        raise UserInputError(f"could not download {what} ({exc.status}); try again") from None
