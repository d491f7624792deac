"""User images are decoded safely: every kind of bad file gets a message, never a traceback."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from generation.errors import UserInputError
from generation.images import load_image


def _png(size=(32, 24), mode="RGB", color=(10, 20, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def test_valid_png_bytes_and_path(tmp_path) -> None:
    data = _png()
    img = load_image(data)
    assert img.size == (32, 24) and img.mode == "RGB"
    path = tmp_path / "x.png"
    path.write_bytes(data)
    assert load_image(path).getpixel((0, 0)) == (10, 20, 30)


def test_transparent_sketch_is_flattened_on_white() -> None:
    img = load_image(_png(mode="RGBA", color=(0, 0, 0, 0)))
    assert img.getpixel((5, 5)) == (255, 255, 255)


def test_not_an_image() -> None:
    with pytest.raises(UserInputError, match="not a recognised image"):
        load_image(b"%PDF-1.4 definitely not a picture")


def test_empty_file() -> None:
    with pytest.raises(UserInputError, match="empty"):
        load_image(b"")


def test_truncated_png() -> None:
    data = _png(size=(256, 256), color=(1, 2, 3))
    noisy = Image.effect_noise((256, 256), 50).convert("RGB")
    buf = io.BytesIO()
    noisy.save(buf, format="PNG")
    data = buf.getvalue()
    with pytest.raises(UserInputError, match="truncated or corrupt"):
        load_image(data[: len(data) // 2])


def test_decompression_bomb_is_refused_before_decoding() -> None:
    # A 20000x20000 one-colour PNG compresses to a few hundred KB but would need 1.2 GB decoded.
    buf = io.BytesIO()
    Image.new("L", (20000, 20000), 0).save(buf, format="PNG", optimize=False)
    with pytest.raises(UserInputError, match="400 megapixels.*limit is 40 megapixels"):
        load_image(buf.getvalue())


def test_animated_gif_is_refused() -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(UserInputError, match="animated"):
        load_image(buf.getvalue())


def test_oversized_and_missing_files(tmp_path) -> None:
    with pytest.raises(UserInputError, match="limit is 1 MiB"):
        load_image(b"x" * (2 * 2**20), max_bytes=2**20)
    with pytest.raises(UserInputError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(UserInputError, match="folder"):
        load_image(tmp_path)
