"""Optional visible "AI" badge in a corner, for servers whose policy asks for one (off by default).

The invisible watermark and metadata are for tools; a badge is for people scrolling past. It is
drawn before the watermark is embedded, so the mark covers the badge too.
"""

from __future__ import annotations

from typing import Literal

from PIL import Image, ImageDraw, ImageFont

Corner = Literal["top-left", "top-right", "bottom-left", "bottom-right"]


def add_label(img: Image.Image, text: str = "AI", *, corner: Corner = "bottom-right") -> Image.Image:
    """A copy of ``img`` with a white-on-dark rounded badge sized to ~7 % of the short side."""
    out = img.convert("RGB")
    short = min(out.size)
    size = max(8, round(short * 0.07))
    font = ImageFont.load_default(size=size)
    overlay = Image.new("RGBA", out.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad, margin = max(2, size // 4), max(2, short // 50)
    box_w, box_h = right - left + 2 * pad, bottom - top + 2 * pad
    x = margin if corner.endswith("left") else out.width - box_w - margin
    y = margin if corner.startswith("top") else out.height - box_h - margin
    draw.rounded_rectangle(
        (x, y, x + box_w, y + box_h), radius=max(1, pad), fill=(0, 0, 0, 160)
    )
    draw.text((x + pad - left, y + pad - top), text, font=font, fill=(255, 255, 255, 235))
    return Image.alpha_composite(out.convert("RGBA"), overlay).convert("RGB")
