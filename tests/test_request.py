"""Request validation: every bad input gets a clear message naming the allowed range."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from core.config import ModelSettings
from core.errors import UserInputError
from core.images import load_image
from generation.request import SCHEDULERS, GenerationRequest, ModelDefaults, infotext, resolve

SD15 = ModelDefaults(family="sd1", size=512, steps=30, guidance=7.0, scheduler="dpm++")
LIMITS = ModelSettings()


def check(**fields) -> GenerationRequest:
    fields.setdefault("prompt", "a red fox")
    return resolve(GenerationRequest(**fields), SD15, LIMITS)


def bad(match: str, **fields) -> str:
    with pytest.raises(UserInputError, match=match) as info:
        check(**fields)
    return str(info.value)


def test_defaults_come_from_the_model_family():
    req = check(seed=5)
    assert (req.width, req.height, req.steps, req.guidance, req.scheduler) == (
        512,
        512,
        30,
        7.0,
        "dpm++",
    )
    assert req.seeds == [5, 6, 7, 8]


def test_missing_seed_is_picked_and_reported():
    req = check()
    assert req.seed is not None and 0 <= req.seed < 2**32
    assert len(req.seeds) == 4


def test_aspect_ratio_keeps_area_and_rounds_to_8():
    req = check(aspect_ratio="16:9")
    assert req.width % 8 == 0 and req.height % 8 == 0
    assert req.width > req.height
    assert abs(req.width / req.height - 16 / 9) < 0.05
    assert 0.9 < req.width * req.height / 512**2 < 1.1


def test_explicit_size_is_rounded_to_multiples_of_8():
    req = check(width=513, height=700)
    assert (req.width, req.height) == (512, 704)


def test_one_side_and_ratio_give_the_other():
    req = check(width=768, aspect_ratio="3:2")
    assert (req.width, req.height) == (768, 512)


def test_empty_prompt():
    msg = bad("prompt is empty", prompt="   ")
    assert "2000 characters" in msg


def test_ten_thousand_character_prompt():
    msg = bad("prompt is 10000 characters long", prompt="a" * 10_000)
    assert "limit is 2000" in msg


@pytest.mark.parametrize("name", ["width", "height"])
@pytest.mark.parametrize("value", [0, 100_000])
def test_side_out_of_range(name, value):
    msg = bad(name, **{name: value})
    assert "32 to 2048 px" in msg


def test_aspect_ratio_100_to_1():
    assert "1:4 to 4:1" in bad("too extreme", aspect_ratio="100:1")


def test_aspect_ratio_garbage():
    assert "W:H" in bad("not of the form", aspect_ratio="wide")


def test_extreme_explicit_size():
    assert "4:1" in bad("too extreme", width=2048, height=64)


def test_pixel_budget():
    msg = bad("megapixels", width=2048, height=2048)
    assert "limit is 1.05 megapixels" in msg


def test_aspect_ratio_and_full_size_conflict():
    bad("either an aspect ratio or a width and height", aspect_ratio="1:1", width=512, height=512)


def test_validation_is_idempotent():
    for fields in ({"aspect_ratio": "16:9"}, {"aspect_ratio": "1:4"}, {"width": 100}, {}):
        once = check(**fields)
        assert resolve(once, SD15, LIMITS) == once


def test_small_model_extreme_ratio_stays_above_the_minimum_side():
    tiny = ModelDefaults(family="tiny", size=64, steps=4, guidance=5.0, scheduler="euler")
    req = resolve(GenerationRequest("x", aspect_ratio="4:1"), tiny, LIMITS)
    assert (req.width, req.height) == (128, 32)


@pytest.mark.parametrize("steps", [0, 10_000])
def test_steps_out_of_range(steps):
    assert "1 to 150" in bad("steps", steps=steps)


def test_nan_guidance():
    assert "0 and 30" in bad("guidance must be a finite number", guidance=float("nan"))


def test_negative_guidance():
    assert "0 to 30" in bad("guidance is -1", guidance=-1.0)


def test_count_out_of_range():
    assert "1 to 4" in bad("image count", count=9)


def test_unknown_scheduler_lists_choices():
    msg = bad("unknown scheduler", scheduler="karras-magic")
    assert all(name in msg for name in SCHEDULERS)


def test_seed_out_of_range():
    assert "4294967295" in bad("seed", seed=-1)


def test_strength_times_steps_must_reach_one_step():
    init = Image.new("RGB", (64, 64))
    assert "at least" in bad("steps x strength", init_image=init, steps=2, strength=0.3)


def test_strength_range():
    assert "0 to 1" in bad("strength", init_image=Image.new("RGB", (64, 64)), strength=1.5)


def test_init_image_sets_aspect_ratio():
    req = check(init_image=Image.new("RGB", (300, 200)))
    assert req.width > req.height


def test_non_image_init_file():
    with pytest.raises(UserInputError, match="not a recognised image"):
        load_image(b"this is text, not a picture", what="init image")


def test_truncated_init_image():
    buf = io.BytesIO()
    Image.new("RGB", (256, 256), (200, 10, 10)).save(buf, format="JPEG")
    with pytest.raises(UserInputError, match="truncated or corrupt"):
        load_image(buf.getvalue()[:400], what="init image")


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` with almost no data: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_png():
    with pytest.raises(UserInputError, match="too large"):
        load_image(_png_header_only(20_000, 20_000), what="init image")


def test_params_round_trip_with_init_image(tmp_path):
    init = Image.new("RGB", (64, 48), (1, 2, 3))
    req = check(init_image=init, negative_prompt="blurry", seed=42, strength=0.5, kind="variation")
    params = req.to_params(init_image_path=tmp_path / "init.png")
    import json

    again = GenerationRequest.from_params(json.loads(json.dumps(params)))
    assert again == req
    assert again.init_image.tobytes() == init.tobytes()


def test_params_need_a_path_for_the_init_image():
    with pytest.raises(ValueError, match="init_image_path"):
        check(init_image=Image.new("RGB", (64, 64))).to_params()


def test_from_params_rejects_unknown_fields():
    with pytest.raises(UserInputError, match="unknown request fields: colour"):
        GenerationRequest.from_params({"prompt": "x", "colour": "red"})


def test_infotext_is_a1111_format():
    req = check(seed=9, negative_prompt="blurry")
    assert infotext(req, 10, "sd15") == (
        "a red fox\nNegative prompt: blurry\n"
        "Steps: 30, Sampler: DPM++ 2M, CFG scale: 7, Seed: 10, Size: 512x512, Model: sd15"
    )


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(
    width=st.one_of(st.none(), st.integers(-10, 5000)),
    height=st.one_of(st.none(), st.integers(-10, 5000)),
    ar=st.one_of(
        st.none(), st.tuples(st.integers(0, 20), st.integers(0, 20)).map(lambda t: f"{t[0]}:{t[1]}")
    ),
)
def test_any_size_is_either_valid_or_a_clear_error(width, height, ar):
    try:
        req = check(width=width, height=height, aspect_ratio=ar)
    except UserInputError as exc:
        message = str(exc)
        assert any(
            hint in message
            for hint in (
                "allowed range",
                "limit is",
                "between",
                "W:H",
                "either an aspect ratio",
                "minimum is",
                "above 0",
            )
        ), message
        return
    assert req.width % 8 == 0 and req.height % 8 == 0
    assert 32 <= req.width <= LIMITS.max_side and 32 <= req.height <= LIMITS.max_side
    assert req.width * req.height <= LIMITS.max_pixels
    assert resolve(req, SD15, LIMITS) == req  # idempotent
