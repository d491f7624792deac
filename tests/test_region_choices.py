"""Vary (Region)'s menu: the preset halves and centre, and each face NudeNet finds (real model)."""

from __future__ import annotations

from PIL import Image
from skimage import data

from bot.cogs.edit import region_choices
from bot.edit_views import REGION_PRESETS, box_op, canvas_of
from generation.outpaint import parse_canvas


def test_a_photo_with_a_face_offers_the_face_as_a_region() -> None:
    photo = Image.fromarray(data.astronaut())  # 512x512, one face in the upper middle
    choices = region_choices(photo)
    for label, box in REGION_PRESETS.items():
        assert choices[label] == box_op(box)
    face = choices["Face"]
    x0, y0, x1, y1 = (float(v) for v in face[1:].split(","))
    assert 0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0
    assert 0.3 < (x0 + x1) / 2 < 0.7 and (y0 + y1) / 2 < 0.5, "the face is in the upper middle"
    assert (x1 - x0) * (y1 - y0) < 0.25, "a face, not the whole picture"
    kind, spec = canvas_of(face)
    assert kind == "region"
    parse_canvas(spec)  # the engine accepts the box


def test_a_picture_without_people_offers_only_the_presets() -> None:
    flat = Image.new("RGB", (128, 128), (90, 140, 200))
    assert set(region_choices(flat)) == set(REGION_PRESETS)
