"""``a cat::2 a dog::1`` multi-prompts: the split rules, their checks, and the embedding mix on
the real tiny SD and SDXL pipelines."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from core.config import TINY_SDXL_NAME, Settings
from core.errors import UserInputError
from generation.engine import Engine
from generation.prompt_weights import check_weights, split_weighted
from generation.request import GenerationRequest


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


@pytest.mark.parametrize(
    ("prompt", "parts"),
    [
        ("a cat", [("a cat", 1.0)]),
        ("  a cat  ", [("a cat", 1.0)]),
        ("a cat::1", [("a cat", 1.0)]),
        ("a cat::2 a dog::1", [("a cat", 2.0), ("a dog", 1.0)]),
        ("a cat:: a dog", [("a cat", 1.0), ("a dog", 1.0)]),
        ("hot dog:: dog::-0.5", [("hot dog", 1.0), ("dog", -0.5)]),
        ("a::.5 b::1.", [("a", 0.5), ("b", 1.0)]),
        ("::2 a cat::3 ::4", [("a cat", 3.0)]),  # empty parts go with their weights
        ("pixel::2d art", [("pixel", 1.0), ("2d art", 1.0)]),  # a number running into a word
        ("ratio 16:9::2 x", [("ratio 16:9", 2.0), ("x", 1.0)]),
    ],
)
def test_split_rules(prompt: str, parts: list[tuple[str, float]]) -> None:
    assert split_weighted(prompt) == parts


_PART = st.text(alphabet="abc xyz,", min_size=1, max_size=8).filter(str.strip)
_WEIGHT = st.integers(-20, 20).map(float)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_PART, _WEIGHT), min_size=1, max_size=10))
def test_split_reads_back_what_was_written(parts: list[tuple[str, float]]) -> None:
    text = " ".join(f"{p}::{w:g}" for p, w in parts)
    assert split_weighted(text) == [(p.strip(), w) for p, w in parts]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab :.-12", max_size=24))
def test_split_and_check_never_crash(prompt: str) -> None:
    parts = split_weighted(prompt)
    assert all(text and text == text.strip() for text, _ in parts)
    try:
        check_weights(prompt)
    except UserInputError as exc:
        assert str(exc)


@pytest.mark.parametrize(
    ("prompt", "words"),
    [
        ("::2 ::3", "no text"),
        (" ".join(f"p{i}::1" for i in range(9)), "9 '::' parts; the limit is 8"),
        ("a cat::11 a dog", "between -10 and 10"),
        ("a cat::" + "9" * 400 + " a dog", "between -10 and 10"),  # inf
        ("a cat::1 a dog::-1", "add up to 0"),
        ("a cat::-2", "add up to -2"),
    ],
)
def test_bad_weights_are_refused_by_resolve(tiny_engine: Engine, prompt: str, words: str) -> None:
    with pytest.raises(UserInputError, match=words.replace("(", r"\(")):
        tiny_engine.validate(GenerationRequest(prompt, seed=1, count=1))


def _one(engine: Engine, prompt: str, seed: int = 3) -> np.ndarray:
    # High guidance: the random text encoder moves pixels little at the default.
    req = GenerationRequest(prompt, seed=seed, count=1, steps=2, guidance=12.0)
    return pixels(engine.generate([req])[0].images[0])


def _weighted_mix_runs(engine: Engine) -> None:
    cat, dog = _one(engine, "a red cat"), _one(engine, "a blue dog")
    apart = np.abs(cat - dog).mean()
    for prompt, near, far in (
        ("a red cat::2 a blue dog::1", cat, dog),
        ("a red cat::1 a blue dog::2", dog, cat),
    ):
        mixed = _one(engine, prompt)
        # Between the two, nearer the heavier part: a mix, weighted, not either part alone.
        assert 0.1 * apart < np.abs(mixed - near).mean() < np.abs(mixed - far).mean() < apart
    assert np.array_equal(_one(engine, "a red cat::1"), cat)
    assert np.array_equal(_one(engine, "a red cat:: a red cat::3"), cat)  # one text, any weights


def test_weighted_prompt_on_tiny_sd(tiny_engine: Engine) -> None:
    _weighted_mix_runs(tiny_engine)


def test_weighted_prompt_on_tiny_sdxl(tmp_path) -> None:
    engine = Engine.load(
        Settings(data_dir=tmp_path, model={"name": TINY_SDXL_NAME, "device": "cpu"})
    )
    assert engine.xl
    _weighted_mix_runs(engine)
    # A mixed batch where the unweighted row has an empty negative (SDXL zeroes it) and the
    # other a real one: both paths of prompt_kwargs at once.
    plain = GenerationRequest("a red cat", seed=3, count=1, steps=2)
    other = plain.replace(prompt="a green fox", negative_prompt="blur", seed=4)
    before = engine.generate([plain, other])[0].images[0]
    both = engine.generate([plain, other.replace(prompt="a cat::2 a dog")])
    assert np.array_equal(pixels(both[0].images[0]), pixels(before))


def test_unweighted_rows_of_a_mixed_batch_keep_their_pixels(tiny_engine: Engine) -> None:
    """Against a batch of the same size without weights: the UNet's CPU sums depend on the batch
    size (``tests/test_engine.py`` ``batch_equal``), the prompt path must change nothing."""
    plain = GenerationRequest("a red cat", seed=5, count=2, steps=2, negative_prompt="blur")
    other = plain.replace(prompt="a green fox", seed=9)
    weighted = plain.replace(prompt="a red cat::2 a blue dog::-0.5", seed=9)
    assert tiny_engine.batch_key(plain) == tiny_engine.batch_key(weighted)  # one pipeline call
    before = tiny_engine.generate([plain, other])[0]
    mixed = tiny_engine.generate([plain, weighted])
    for a, b in zip(before.images, mixed[0].images, strict=True):
        assert np.array_equal(pixels(a), pixels(b))
    weighted_alone = tiny_engine.generate([weighted])[0]
    for a, b in zip(weighted_alone.images, mixed[1].images, strict=True):
        assert np.abs(pixels(a) - pixels(b)).max() <= 1


def test_weights_work_without_guidance(tiny_engine: Engine) -> None:
    """Turbo models run unguided; the mix is in the conditioning, so it still counts."""

    def run(prompt: str) -> np.ndarray:
        req = GenerationRequest(prompt, seed=3, count=1, steps=2, guidance=0.0)
        return pixels(tiny_engine.generate([req])[0].images[0])

    cat, mixed = run("a red cat"), run("a red cat::1 a blue dog::3")
    assert not np.array_equal(cat, mixed)
    assert np.array_equal(run("a red cat::1"), cat)
