"""User images are decoded safely: every kind of bad file gets a message, never a traceback."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from core.errors import UserInputError
from core.images import load_image


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


def _bomb_png(width: int = 8000, height: int = 5000) -> bytes:
    buf = io.BytesIO()  # 40 megapixels in a few kilobytes
    Image.new("1", (width, height)).save(buf, format="PNG")
    return buf.getvalue()


def test_a_40_megapixel_png_is_refused_from_its_header_without_decoding(monkeypatch) -> None:
    from PIL import ImageFile

    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(
        ImageFile.ImageFile, "load", lambda self: decoded.append(self) or real_load(self)
    )
    data = _bomb_png()
    assert len(data) < 200_000
    with pytest.raises(UserInputError, match="40 megapixels.*limit is 16 megapixels"):
        load_image(data, max_pixels=16_000_000, target_pixels=1_000_000)
    assert decoded == [], "the pixels were never decoded"


def test_a_large_jpeg_decodes_at_a_reduced_scale_then_to_the_models_size(monkeypatch) -> None:
    buf = io.BytesIO()
    Image.radial_gradient("L").resize((4000, 3000)).convert("RGB").save(buf, format="JPEG")
    from PIL.JpegImagePlugin import JpegImageFile

    drafts = []
    real_draft = JpegImageFile.draft
    monkeypatch.setattr(
        JpegImageFile,
        "draft",
        lambda self, mode, size: drafts.append(size) or real_draft(self, mode, size),
    )
    # 12 MP is over a 4 MP budget, but decoded at 1/2 scale (3 MP) it fits.
    img = load_image(buf.getvalue(), max_pixels=4_000_000, target_pixels=1_000_000)
    assert drafts, "decoded with Image.draft"
    assert 1_000_000 <= img.width * img.height <= 1_010_000
    assert abs(img.width / img.height - 4 / 3) < 0.01


def test_only_the_accepted_formats_are_opened() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="TIFF")
    assert load_image(buf.getvalue()).size == (8, 8)  # the CLI opens anything Pillow knows
    with pytest.raises(UserInputError, match=r"not a recognised image \(PNG, JPEG are accepted\)"):
        load_image(buf.getvalue(), formats=["PNG", "JPEG"])


async def test_concurrent_uploads_decode_a_few_at_a_time(monkeypatch) -> None:
    import asyncio
    import threading

    from core import images

    running, peak, lock = [0], [0], threading.Lock()
    real = images.load_image

    def counting(data, **kw):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            return real(data, **kw)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(images, "load_image", counting)
    data = _png(size=(512, 512))
    out = await asyncio.gather(*(images.decode_upload(data, concurrency=2) for _ in range(8)))
    assert len(out) == 8 and peak[0] <= 2
