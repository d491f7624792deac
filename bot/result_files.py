"""The files a result carries: the grid or the single images, re-encoded to fit Discord's limit.

Blocked images never leave the bot; a spoilered one spoilers the grid (``SPOILER_`` names).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import discord
from PIL import Image

from core.jobs import ImageRecord, Job

DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024  # what an interaction allows unless it says more
REQUEST_LIMIT = 25 * 1024 * 1024  # all files of one message together


@dataclass
class EncodedFile:
    data: bytes
    filename: str

    def to_file(self) -> discord.File:
        return discord.File(io.BytesIO(self.data), filename=self.filename)


def fit_to_limit(path: str | Path, limit: int, *, stem: str | None = None) -> EncodedFile:
    """The file as it is when it fits, else re-encoded (WebP, JPEG, then smaller) to fit.

    The invisible watermark survives WebP/JPEG at these qualities (tests/test_watermark.py); the
    PNG's metadata does not, which is why the store keeps the original.
    """
    path = Path(path)
    stem = stem or path.stem
    data = path.read_bytes()
    if len(data) <= limit:
        return EncodedFile(data, f"{stem}{path.suffix or '.png'}")
    with Image.open(path) as opened:
        img = opened.convert("RGB")
    scale = 1.0
    while True:
        candidate = img
        if scale < 1.0:
            size = (max(1, int(img.width * scale)), max(1, int(img.height * scale)))
            candidate = img.resize(size, Image.Resampling.LANCZOS)
        for fmt, ext, quality in (
            ("WEBP", ".webp", 90),
            ("WEBP", ".webp", 75),
            ("JPEG", ".jpg", 80),
        ):
            buf = io.BytesIO()
            candidate.save(buf, format=fmt, quality=quality)
            if buf.tell() <= limit:
                return EncodedFile(buf.getvalue(), f"{stem}{ext}")
        if candidate.width <= 16 or candidate.height <= 16:
            raise ValueError(f"cannot fit {path.name} under {limit} bytes")
        scale *= 0.7


def is_spoiler(image: ImageRecord) -> bool:
    mod = image.moderation or {}
    return bool(mod.get("spoiler")) or mod.get("action") == "spoiler"


def choose_files(job: Job, images: list[ImageRecord], limit: int) -> list[EncodedFile]:
    """The grid when there is one and every image may be shown, else the allowed singles.

    Blocked images never leave the bot; one spoilered image spoilers the grid.
    """
    allowed = [img for img in images if not img.blocked]
    spoiler = bool(job.delivery.get("spoiler")) or any(is_spoiler(img) for img in allowed)
    prefix = "SPOILER_" if spoiler else ""
    limit = min(limit, REQUEST_LIMIT)
    if job.grid_path and len(allowed) == len(images) and len(images) > 1:
        return [fit_to_limit(job.grid_path, limit, stem=f"{prefix}{job.id}_grid")]
    per_file = min(limit, REQUEST_LIMIT // max(1, len(allowed)))
    return [
        fit_to_limit(
            img.path,
            per_file,
            stem=f"{'SPOILER_' if job.delivery.get('spoiler') or is_spoiler(img) else ''}{job.id}_{img.index + 1}",
        )
        for img in allowed
    ]
