"""Inline Midjourney-style parameters: what people type, and every way it can be wrong."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.derive import remix_changes
from bot.params import KNOWN, PromptParams, ignored_by_model, parse_aspect_ratio, parse_prompt
from core.errors import UserInputError


def test_plain_prompt_has_no_parameters() -> None:
    p = parse_prompt("  a red   fox in snow ")
    assert p == PromptParams(prompt="a red fox in snow")


def test_midjourney_prompt_is_split_into_fields() -> None:
    p = parse_prompt(
        "a castle at dusk --ar 16:9 --seed 42 --no trees, cars --q 2 --s 250 --steps 8"
    )
    assert p.prompt == "a castle at dusk"
    assert p.aspect_ratio == "16:9"
    assert p.seed == 42
    assert p.negative_prompt == "trees, cars"
    assert p.quality == 2.0
    assert p.stylize == 250
    assert p.steps == 8
    assert p.given == ("ar", "seed", "no", "q", "s", "steps")


def test_aliases_and_em_dash_from_phones() -> None:
    p = parse_prompt("a fox \u2014aspect 2:3 --QUALITY .5 --n 2 --style Anime")
    assert (p.aspect_ratio, p.quality, p.count, p.style) == ("2:3", 0.5, 2, "anime")


def test_style_and_stylize_reach_the_request() -> None:
    kwargs = parse_prompt("a fox --style photo --no blur --s 100").request_kwargs()
    assert kwargs["prompt"].startswith("a fox, photograph")
    assert kwargs["negative_prompt"].startswith("blur, ")
    assert kwargs["guidance"] == 7.0
    assert parse_prompt("a fox --s 100 --cfg 3").request_kwargs()["guidance"] == 3.0
    assert "count" not in parse_prompt("a fox").request_kwargs()


def test_summary_round_trips() -> None:
    p = parse_prompt("a fox --ar 3:2 --seed 7 --no snow --q .5 --count 2")
    again = parse_prompt(f"{p.prompt} {p.summary()}")
    assert again.summary() == p.summary()
    assert again.seed == 7 and again.negative_prompt == "snow"


def test_tile_and_chaos_reach_the_request_and_the_summary() -> None:
    p = parse_prompt("a tiled floor --tile --c 40 --ar 2:1 --no grout")
    assert (p.tile, p.chaos, p.negative_prompt) == (True, 40, "grout")
    kwargs = p.request_kwargs()
    assert (kwargs["tile"], kwargs["chaos"]) == (True, 40)
    assert "--tile" in p.summary() and "--chaos 40" in p.summary()
    again = parse_prompt(f"{p.prompt} {p.summary()}")
    assert again.summary() == p.summary()
    assert (again.tile, again.chaos, again.negative_prompt) == (True, 40, "grout")
    plain = parse_prompt("a floor").request_kwargs()
    assert "tile" not in plain and "chaos" not in plain
    assert parse_prompt("a floor --chaos 0").chaos == 0  # given, so shown: a remix keeps it


def test_remix_keeps_tile_and_chaos_left_in_the_text_and_drops_a_deleted_tile() -> None:
    kept = remix_changes(parse_prompt("a floor --tile --chaos 30"))
    assert (kept["tile"], kept["chaos"]) == (True, 30)
    dropped = remix_changes(parse_prompt("a floor"))
    assert dropped["tile"] is False and "chaos" not in dropped  # the parent's chaos stays


@pytest.mark.parametrize(
    ("text", "guidance", "note"),
    [
        ("a cat", 0.0, None),
        ("a cat --no dogs", 7.0, None),
        ("a cat --no dogs", 0.0, "this model runs without guidance, so --no has no effect"),
        ("a cat --chaos 50", 1.0, "this model runs without guidance, so --chaos has no effect"),
        (
            "a cat --no dogs --chaos 50",
            0.0,
            "this model runs without guidance, so --no and --chaos have no effect",
        ),
        (
            "a cat --chaos 0 --no dogs",
            0.0,
            "this model runs without guidance, so --no has no effect",
        ),
        ("a cat --no dogs --cfg 4", 0.0, None),  # --cfg turns guidance on for a Turbo model
        (
            "a cat --no dogs --cfg 1",
            7.0,
            "guidance is off (--cfg 1 is 1 or less), so --no has no effect",
        ),
        (
            "a cat --chaos 9 --s 0",
            7.0,
            "guidance is off (--s 0 gives guidance 1), so --chaos has no effect",
        ),
        ("a cat::2 a dog", 0.0, None),  # weights are an embedding mix, not guidance
    ],
)
def test_ignored_by_model_names_what_the_user_gave(
    text: str, guidance: float, note: str | None
) -> None:
    assert ignored_by_model(parse_prompt(text), guidance) == note


def test_double_dash_inside_words_is_prompt_text() -> None:
    assert parse_prompt("a well--lit room").prompt == "a well--lit room"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "empty"),
        ("   \u200b\u200d\ufeff ", "invisible"),
        ("--ar 16:9", "no description"),
        ("a fox --zoom 2", "--zoom"),
        ("a fox --seed abc", "whole number"),
        ("a fox --seed -1", "from 0 to 4294967295"),
        ("a fox --seed 99999999999", "from 0 to"),
        ("a fox --ar 16", "width:height"),
        ("a fox --ar 0:9", "between 1 and 100"),
        ("a fox --ar 10:1", "1:4 to 4:1"),
        ("a fox --q 3", "one of .25, .5, 1 or 2"),
        ("a fox --s 5000", "from 0 to 1000"),
        ("a fox --steps 0", "from 1 to 150"),
        ("a fox --count 9", "from 1 to 4"),
        ("a fox --style vaporwave", "photo"),
        ("a fox --cfg nan", "from 0 to 30"),
        ("a fox --seed 1 --seed 2", "twice"),
        ("a fox --no", "leave out"),
        ("a fox --seed", "needs a value"),
        ("a fox --tile yes", "takes no value"),
        ("a fox --tile --tile", "twice"),
        ("a fox --chaos 101", "from 0 to 100"),
        ("a fox --chaos -1", "from 0 to 100"),
        ("a fox --chaos 2.5", "whole number"),
        ("a fox --chaos", "needs a value"),
    ],
)
def test_bad_input_names_the_problem(text: str, words: str) -> None:
    with pytest.raises(UserInputError) as info:
        parse_prompt(text)
    assert words in str(info.value)


def test_unknown_parameter_lists_the_known_ones() -> None:
    with pytest.raises(UserInputError) as info:
        parse_prompt("a fox --weird 50")
    for name in KNOWN:
        assert f"--{name}" in str(info.value)


def test_too_long_prompt_names_the_limit() -> None:
    with pytest.raises(UserInputError, match="limit is 20"):
        parse_prompt("x" * 21, max_chars=20)


def test_aspect_ratio_option_uses_the_same_rules() -> None:
    assert parse_aspect_ratio("16x9") == "16:9"
    with pytest.raises(UserInputError, match="aspect_ratio"):
        parse_aspect_ratio("wide", what="aspect_ratio")


@settings(max_examples=300, deadline=None)
@given(
    st.text()
    | st.lists(
        st.sampled_from(
            [
                *(f"--{n}" for n in KNOWN),
                "--",
                "\u2014ar",
                " ",
                "16:9",
                "2",
                "-1",
                "fox",
                "\u200b",
                ".5",
                "nan",
            ]
        )
    ).map(" ".join)
)
def test_never_raises_anything_but_user_input_error(text: str) -> None:
    try:
        p = parse_prompt(text)
    except UserInputError as exc:
        assert str(exc)
    else:
        assert p.prompt.strip()
        p.request_kwargs()
        p.summary()
