"""``--chaos``: one request's images spread over guidance, merged back into one result."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import UserInputError
from generation.chaos import image_guidance
from generation.engine import Engine
from generation.request import MAX_GUIDANCE, GenerationRequest
from generation.results import ProgressEvent


def pixels(img) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


BASE = GenerationRequest("a red cat", seed=21, count=4, steps=2, guidance=6.0)


def test_chaos_zero_is_todays_result(tiny_engine: Engine) -> None:
    plain = tiny_engine.generate([BASE])[0]
    zero = tiny_engine.generate([BASE.replace(chaos=0)])[0]
    assert [pixels(a).tolist() for a in plain.images] == [pixels(b).tolist() for b in zero.images]
    assert zero.seeds == plain.seeds and zero.timings.keys() == plain.timings.keys()


def test_chaos_spreads_guidance_and_keeps_image_zero(tiny_engine: Engine) -> None:
    events: list[ProgressEvent] = []
    other = GenerationRequest("a blue dog", seed=5, count=1, steps=2, guidance=6.0)
    plain, _ = tiny_engine.generate([BASE, other])
    wild, dog = tiny_engine.generate([BASE.replace(chaos=100), other], progress=events.append)
    assert len(wild.images) == 4 and wild.seeds == plain.seeds == [21, 22, 23, 24]
    assert wild.request.chaos == 100 and wild.request.count == 4  # the original request
    # Image 0: same seed, same guidance; it ran in a batch of 2 with the other request's image
    # (the chaos-0 one ran in a batch of 5), so CPU sums may land a few pixels 1 level apart.
    diff = np.abs(pixels(wild.images[0]) - pixels(plain.images[0]))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    for a, b in zip(wild.images[1:], plain.images[1:], strict=True):
        assert np.abs(pixels(a) - pixels(b)).mean() > 0.5  # other guidance, other image
    assert [image_guidance(wild.request, i) for i in range(4)] == [6.0, 3.0, 9.0, 12.0]
    assert "CFG scale: 6," in wild.infotext(0) and "CFG scale: 12," in wild.infotext(3)
    assert "Seed: 24" in wild.infotext(3)
    assert wild.metadata()["guidance_per_image"] == [6.0, 3.0, 9.0, 12.0]
    # Progress: only original indices, and the chaos request's steps count over its 4 images.
    assert {e.request_index for e in events} == {0, 1}
    steps = [(e.step, e.total) for e in events if e.request_index == 0]
    assert steps[-1] == (8, 8) and {t for _, t in steps} == {8}
    assert len(dog.images) == 1


def test_guidance_spread_is_clamped_and_unguided_requests_stay_put() -> None:
    req = BASE.replace(chaos=100, guidance=25.0, count=5)
    assert [image_guidance(req, i) for i in range(5)] == [
        25.0,
        12.5,
        MAX_GUIDANCE,
        MAX_GUIDANCE,
        1.0,
    ]
    turbo = BASE.replace(chaos=100, guidance=0.0)
    assert [image_guidance(turbo, i) for i in range(4)] == [0.0] * 4
    assert image_guidance(BASE.replace(chaos=50, count=1), 0) == 6.0


@pytest.mark.parametrize("chaos", [-1, 101, 2.5, "50", True])
def test_chaos_range_is_checked(tiny_engine: Engine, chaos: object) -> None:
    with pytest.raises(UserInputError, match="chaos"):
        tiny_engine.validate(BASE.replace(chaos=chaos))
