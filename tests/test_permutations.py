"""``{a, b}`` permutation prompts: the expansion rules, the limit, and refusals with a message."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.params import parse_prompt
from bot.permutations import expand_permutations
from core.config import Settings
from core.errors import UserInputError


def test_no_braces_is_the_text_itself() -> None:
    assert expand_permutations("a  red car --ar 1:1", 1) == ["a  red car --ar 1:1"]


def test_groups_expand_in_order_first_group_slowest() -> None:
    assert expand_permutations("a {red, blue} {car, bike}", 10) == [
        "a red car",
        "a red bike",
        "a blue car",
        "a blue bike",
    ]


def test_empty_option_and_double_spaces_collapse() -> None:
    assert expand_permutations("a {, red} car", 10) == ["a car", "a red car"]


def test_parameters_can_be_permuted_and_then_parse() -> None:
    prompts = expand_permutations("a car --ar {1:1, 16:9} --chaos {0,50}", 10)
    assert prompts == [
        "a car --ar 1:1 --chaos 0",
        "a car --ar 1:1 --chaos 50",
        "a car --ar 16:9 --chaos 0",
        "a car --ar 16:9 --chaos 50",
    ]
    assert [parse_prompt(p).aspect_ratio for p in prompts] == ["1:1", "1:1", "16:9", "16:9"]


def test_more_than_the_limit_says_how_many() -> None:
    with pytest.raises(UserInputError) as info:
        expand_permutations("{a,b,c} {d,e,f,g}", 10)
    assert "3 x 4 = 12" in str(info.value) and "limit is 10" in str(info.value)
    assert len(expand_permutations("{a,b,c} {d,e,f,g}", 12)) == 12


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a {red, blue car", "never closed"),
        ("a red} car", "no '{'"),
        ("a {red, {dark, light} blue} car", "nested"),
        ("a \\{red, blue} car", "escaped braces"),
        ("a {red\\, dark, blue} car", "escaped commas"),
    ],
)
def test_unsupported_syntax_is_refused_clearly(text: str, words: str) -> None:
    with pytest.raises(UserInputError, match=words):
        expand_permutations(text, 10)


def test_default_limit_is_a_setting() -> None:
    assert Settings().discord.max_permutations == 10


_WORD = st.text(alphabet="abc xyz:-", max_size=6).filter(lambda w: "{" not in w)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(_WORD, min_size=1, max_size=4),
    st.lists(st.lists(_WORD, min_size=1, max_size=3), max_size=3),
)
def test_expansion_is_the_cartesian_product(pieces: list[str], groups: list[list[str]]) -> None:
    groups = groups[: len(pieces) - 1] if len(pieces) > 1 else []
    text = pieces[0] + "".join(
        "{" + ",".join(g) + "}" + p for g, p in zip(groups, pieces[1:], strict=False)
    )
    text += "".join(pieces[len(groups) + 1 :])
    out = expand_permutations(text, 1000)
    if not groups:
        assert out == [text]
        return
    expected = []
    for combo in itertools.product(*groups):
        parts = [pieces[0]]
        for option, piece in zip(combo, pieces[1 : len(groups) + 1], strict=True):
            parts += [option.strip(), piece]
        parts += pieces[len(groups) + 1 :]
        expected.append(" ".join("".join(parts).split()))
    assert out == expected
    assert all("  " not in p and p == p.strip() for p in out)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab{},\\ ", max_size=20), st.integers(1, 20))
def test_never_raises_anything_but_user_input_error(text: str, limit: int) -> None:
    try:
        out = expand_permutations(text, limit)
    except UserInputError as exc:
        assert str(exc)
    else:
        assert 1 <= len(out) <= limit
