"""Result buttons: the custom_id scheme, Discord's limits, and rebuilding a button from its id."""

from __future__ import annotations

import re

import discord
import pytest

from bot import views


@pytest.mark.parametrize("count", [1, 2, 3, 4])
@pytest.mark.parametrize("kind", ["imagine", "variation", "reroll", "upscale"])
def test_result_view_respects_discord_limits(count: int, kind: str) -> None:
    view = views.result_view("k3x9q2m7ab", count, kind=kind)
    rows = view.to_components()
    assert 1 <= len(rows) <= 5
    ids = [c["custom_id"] for row in rows for c in row["components"]]
    assert all(len(row["components"]) <= 5 for row in rows)
    assert len(ids) == len(set(ids)), "custom_ids must be unique per message"
    assert all(1 <= len(i) <= 100 for i in ids)
    assert all(len(c.get("label", "")) <= 80 for row in rows for c in row["components"])


def test_grid_has_every_midjourney_button() -> None:
    rows = views.result_view("abc123", 4).to_components()
    ids = {c["custom_id"] for row in rows for c in row["components"]}
    job = "abc123"
    expected = {views.upscale_id(job, i) for i in range(4)}
    expected |= {views.variation_id(job, i, strong) for i in range(4) for strong in (False, True)}
    expected |= {views.reroll_id(job), views.remix_id(job), views.delete_id(job)}
    assert ids == expected
    labels = [c.get("label") for c in rows[0]["components"]]
    assert labels[:4] == ["U1", "U2", "U3", "U4"]


def test_upscaled_image_can_be_varied_but_not_upscaled_again() -> None:
    rows = views.result_view("abc123", 1, kind="upscale").to_components()
    ids = {c["custom_id"] for row in rows for c in row["components"]}
    assert views.variation_id("abc123", 0, True) in ids
    assert not any(i.startswith("ib:u:") for i in ids)


@pytest.mark.parametrize(
    ("cls", "custom_id", "state"),
    [
        (views.UpscaleButton, "ib:u:k3x9q2m7ab:1", {"job_id": "k3x9q2m7ab", "index": 1}),
        (views.VariationButton, "ib:v:k3x9q2m7ab:0:S", {"index": 0, "strong": True}),
        (views.VariationButton, "ib:v:k3x9q2m7ab:3:s", {"index": 3, "strong": False}),
        (views.JobButton, "ib:r:k3x9q2m7ab", {"job_id": "k3x9q2m7ab"}),
        (views.JobButton, "ib:m:k3x9q2m7ab", {"job_id": "k3x9q2m7ab"}),
        (views.JobButton, "ib:d:k3x9q2m7ab", {"job_id": "k3x9q2m7ab"}),
    ],
)
async def test_buttons_rebuild_from_custom_id_alone(cls, custom_id: str, state: dict) -> None:
    match = cls.__discord_ui_compiled_template__.match(custom_id)
    assert match is not None
    item = await cls.from_custom_id(None, None, match)  # type: ignore[arg-type]
    assert item.custom_id == custom_id
    for key, value in state.items():
        assert getattr(item, key) == value


@pytest.mark.parametrize(
    "custom_id", ["ib:u:ABC:1", "ib:u:abc:12", "ib:v:abc:1:x", "ib:r:", "ib:x:abc", "ib:u:abc:1 "]
)
def test_foreign_or_malformed_ids_match_no_button(custom_id: str) -> None:
    assert not any(
        re.match(cls.__discord_ui_compiled_template__, custom_id) for cls in views.DYNAMIC_ITEMS
    )


def test_view_is_persistent() -> None:
    view = views.result_view("abc123", 4)
    assert view.timeout is None
    assert view.is_persistent()
    assert all(isinstance(item, discord.ui.DynamicItem) for item in view.children)
