"""``--tile``: seamless images on the real tiny pipeline, and padding restored after each call."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import JobCancelled, UserInputError
from generation.engine import Engine
from generation.request import GenerationRequest
from generation.tiling import seamless


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum()))


def seams(img: Image.Image) -> tuple[float, float, float, float]:
    """(wrap, inside) correlations for columns, then rows: last vs first column, and the median
    of neighbouring columns. The tiny model's images are coloured noise with some structure, so
    absolute differences are dominated by noise everywhere; a correlation sees the seam."""
    a = np.asarray(img, dtype=np.float64)
    inside_cols = np.median([_corr(a[:, j], a[:, j + 1]) for j in range(a.shape[1] - 1)])
    inside_rows = np.median([_corr(a[i], a[i + 1]) for i in range(a.shape[0] - 1)])
    return _corr(a[:, -1], a[:, 0]), float(inside_cols), _corr(a[-1], a[0]), float(inside_rows)


def _convs(engine: Engine) -> list[torch.nn.Conv2d]:
    models = (engine.txt2img.unet, engine.txt2img.vae)
    return [m for model in models for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


def test_tiled_image_wraps_and_untiled_has_a_seam(tiny_engine: Engine) -> None:
    # Measured (seed 11, 4 images, 64x64, 4 steps): tiled wrap 0.84-0.93 against 0.84-0.89
    # inside; untiled wrap -0.22..0.17 against 0.84-0.89 inside.
    req = GenerationRequest("a red cat", seed=11, count=4, steps=4)
    tiled = tiny_engine.generate([req.replace(tile=True)])[0]
    plain = tiny_engine.generate([req])[0]
    for img in tiled.images:
        wrap_c, inside_c, wrap_r, inside_r = seams(img)
        assert wrap_c > inside_c - 0.1 and wrap_r > inside_r - 0.1
    for img in plain.images:
        wrap_c, inside_c, wrap_r, inside_r = seams(img)
        assert wrap_c < inside_c / 2 and wrap_r < inside_r / 2


def test_convs_are_restored_after_the_call_and_after_a_cancel(tiny_engine: Engine) -> None:
    before = [c.padding_mode for c in _convs(tiny_engine)]
    assert set(before) == {"zeros"}
    seen: list[set[str]] = []
    tiny_engine.generate(
        [GenerationRequest("a cat", seed=1, count=1, steps=2, tile=True)],
        progress=lambda _: seen.append({c.padding_mode for c in _convs(tiny_engine)}),
    )
    assert seen and all(modes == {"circular"} for modes in seen)
    assert [c.padding_mode for c in _convs(tiny_engine)] == before
    with pytest.raises(JobCancelled):
        tiny_engine.generate(
            [GenerationRequest("a cat", seed=1, count=1, steps=2, tile=True)],
            should_cancel=lambda: bool(seen.append(set())) or len(seen) > 3,
        )
    assert [c.padding_mode for c in _convs(tiny_engine)] == before
    assert not any(m._forward_pre_hooks for m in tiny_engine.txt2img.vae.modules())


def test_the_vae_encoder_wraps_too(tiny_engine: Engine) -> None:
    """A variation of a tiled image goes through the encoder, whose downsamplers pad by hand:
    with the wrap, shifting the image by one latent pixel shifts its latents by exactly one."""
    vae = tiny_engine.txt2img.vae
    factor = tiny_engine.txt2img.vae_scale_factor
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    shifted = torch.roll(image, shifts=(factor, factor), dims=(2, 3))

    def encode(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return vae.encode(x).latent_dist.mean

    with seamless(tiny_engine.txt2img):
        wrapped = torch.roll(encode(image), shifts=(1, 1), dims=(2, 3)), encode(shifted)
    assert torch.allclose(*wrapped, atol=1e-5)
    plain = torch.roll(encode(image), shifts=(1, 1), dims=(2, 3)), encode(shifted)
    assert not torch.allclose(*plain, atol=1e-3)


def test_tile_is_part_of_the_batch_key_and_checked(tiny_engine: Engine) -> None:
    req = tiny_engine.validate(GenerationRequest("a cat", seed=1, count=1))
    assert tiny_engine.batch_key(req) != tiny_engine.batch_key(req.replace(tile=True))
    with pytest.raises(UserInputError, match="tile must be true or false"):
        tiny_engine.validate(req.replace(tile="yes"))


def test_infotext_says_tiling(tiny_engine: Engine) -> None:
    [res] = tiny_engine.generate([GenerationRequest("a cat", seed=1, count=1, steps=1, tile=True)])
    assert "Tiling: True" in res.infotext(0) and res.metadata()["tile"] is True
    [plain] = tiny_engine.generate([GenerationRequest("a cat", seed=1, count=1, steps=1)])
    assert "Tiling" not in plain.infotext(0)
