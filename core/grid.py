"""The grid a job's images are delivered in: one layout rule, and the tiling that follows it.

Its own module, importing only PIL, because the watermark reads grids tile by tile
(``moderation.watermark.detect_tiles``) and must not load torch to know where the tiles are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image


def grid_layout(count: int) -> tuple[int, int]:
    """(columns, rows) of a near-square grid of ``count`` images (4 -> 2x2, 2 -> 2x1)."""
    if count < 1:
        raise ValueError(f"a grid needs at least one image, got {count}")
    cols = math.ceil(math.sqrt(count))
    return cols, math.ceil(count / cols)


def make_grid(images: Sequence[Image.Image]) -> Image.Image:
    """Tile images row-major into ``grid_layout(len(images))``, like Midjourney's first reply."""
    if len(images) == 1:
        return images[0].copy()
    cols, rows = grid_layout(len(images))
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w, rows * h), (0, 0, 0))
    for i, img in enumerate(images):
        grid.paste(img, ((i % cols) * w, (i // cols) * h))
    return grid
