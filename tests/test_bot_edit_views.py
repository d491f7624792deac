"""The Zoom Out / Pan / Vary (Region) items: ids, ops and the layout under a single image."""

from __future__ import annotations

import re

import pytest

from bot import edit_views, views
from core.errors import UserInputError


def test_single_image_offers_zoom_pan_and_region_within_discord_limits() -> None:
    rows = views.result_view("k3x9q2m7ab", 1, kind="upscale").to_components()
    assert len(rows) <= 5 and all(len(r["components"]) <= 5 for r in rows)
    ids = {c["custom_id"] for row in rows for c in row["components"]}
    for op in ("z2", "z1.5", "zc", "pl", "pr", "pu", "pd"):
        assert edit_views.edit_id("k3x9q2m7ab", 0, op) in ids
    assert "ib:vr:k3x9q2m7ab:0" in ids
    assert all(len(i) <= 100 for i in ids)


def test_a_grid_has_no_edit_buttons() -> None:
    rows = views.result_view("k3x9q2m7ab", 4).to_components()
    ids = {c["custom_id"] for row in rows for c in row["components"]}
    assert not any(i.startswith(("ib:e:", "ib:vr:")) for i in ids)


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        ("z2", ("zoom", "zoom:2")),
        ("z1.5", ("zoom", "zoom:1.5")),
        ("pl", ("pan", "pan:left")),
        ("pd", ("pan", "pan:down")),
        ("b0,0,0.5,1", ("region", "region:0,0,0.5,1")),
    ],
)
def test_ops_name_their_canvas(op: str, expected: tuple[str, str]) -> None:
    assert edit_views.canvas_of(op) == expected


def test_every_op_fits_the_templates() -> None:
    ops = ["z2", "z1.5", "zc", "pl", "pr", "pu", "pd"]
    ops += [edit_views.box_op(b) for b in edit_views.REGION_PRESETS.values()]
    ops.append(edit_views.box_op((0.123456, 0.2, 0.987654, 1.0)))
    template = edit_views.EditButton.__discord_ui_compiled_template__
    modal = edit_views.EDIT_MODAL
    for op in ops:
        if not op.startswith("b"):
            assert template.fullmatch(edit_views.edit_id("abc", 0, op))
        assert modal.fullmatch(f"ib:em:abc:0:{op}:123456789012345678")
        if op.startswith("b"):
            edit_views.canvas_of(op)


def test_box_op_is_short_and_exact_to_a_thousandth() -> None:
    assert edit_views.box_op((0.0, 0.0, 0.5, 1.0)) == "b0,0,0.5,1"
    assert edit_views.box_op((0.1234, 0.5, 0.75, 0.9999)) == "b0.123,0.5,0.75,1"


@pytest.mark.parametrize(
    ("text", "rest", "op"),
    [
        ("a castle --zoom 2", "a castle", "z2"),
        ("a castle --zoom 1.5 --ar 16:9", "a castle  --ar 16:9", "z1.5"),
        ("a castle", "a castle", "z2"),
        ("a castle \u2014zoom 1.25", "a castle", "z1.25"),
    ],
)
def test_custom_zoom_reads_its_factor(text: str, rest: str, op: str) -> None:
    got_rest, got_op = edit_views.zoom_op(text)
    assert re.sub(r"\s+", " ", got_rest) == re.sub(r"\s+", " ", rest)
    assert got_op == op


@pytest.mark.parametrize("value", ["3", "1", "1.05", "0.5", "x", "nan"])
def test_custom_zoom_refuses_factors_out_of_range(value: str) -> None:
    with pytest.raises(UserInputError, match="--zoom must be a number from 1.1 to 2"):
        edit_views.zoom_op(f"a castle --zoom {value}")
