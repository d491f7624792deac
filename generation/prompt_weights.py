"""Midjourney multi-prompts: ``a cat::2 a dog::1`` mixes the two prompts' embeddings 2:1.

Why the engine's own mix and not compel: compel is not a dependency, and its syntax clashes with
what people paste from Midjourney (``+``/``-`` after words, ``("a", "b").blend(...)``, ``(word)1.2``
are ordinary prompt text there). Midjourney's rules are small: ``::`` ends a part, a number right
after it is that part's weight (default 1, negative allowed), and each row's conditioning is
the weighted mean of its parts' text embeddings (``mix_embeddings``), so it also works where
guidance is off (Turbo). The whole text, parts and weights included, is what moderation sees.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch

from core.errors import UserInputError

MAX_PARTS = 8
MAX_WEIGHT = 10.0
# "::" and, right after it, an optional number that ends there (``::2 a dog``, ``::-.5``); a
# number running on into a word (``::2d art``) is prompt text, not a weight.
_SEPARATOR = re.compile(r"::(-?(?:\d+(?:\.\d*)?|\.\d+))?(?![\w.])|::")


def split_weighted(prompt: str) -> list[tuple[str, float]]:
    """The prompt's parts and their weights, in order: ``[("a cat", 2.0), ("a dog", 1.0)]``.

    A prompt without ``::`` is one part of weight 1. Parts are stripped; empty ones are dropped
    with their weight (``::2 a cat`` is just ``a cat``). Weights are not checked here
    (``check_weights`` does, for ``resolve``).
    """
    parts: list[tuple[str, float]] = []
    start = 0
    for match in _SEPARATOR.finditer(prompt):
        text = prompt[start : match.start()].strip()
        if text:
            parts.append((text, float(match.group(1)) if match.group(1) else 1.0))
        start = match.end()
    tail = prompt[start:].strip()
    if tail:
        parts.append((tail, 1.0))
    return parts


def is_weighted(prompt: str) -> bool:
    """Whether ``prompt`` needs the embedding mix (more than one part)."""
    return "::" in prompt and len(split_weighted(prompt)) > 1


def check_weights(prompt: str) -> None:
    """Raise ``UserInputError`` naming the problem when ``prompt``'s ``::`` weights cannot run."""
    if "::" not in prompt:
        return
    parts = split_weighted(prompt)
    if not parts:
        raise UserInputError(
            "the prompt has '::' separators but no text; write e.g. a cat::2 a dog"
        )
    if len(parts) > MAX_PARTS:
        raise UserInputError(f"the prompt has {len(parts)} '::' parts; the limit is {MAX_PARTS}")
    for text, weight in parts:
        if not math.isfinite(weight) or not -MAX_WEIGHT <= weight <= MAX_WEIGHT:
            raise UserInputError(
                f"the weight of {text!r} is {weight:g}; weights must be between "
                f"{-MAX_WEIGHT:g} and {MAX_WEIGHT:g}"
            )
    total = sum(weight for _, weight in parts)
    if total <= 0:
        raise UserInputError(
            f"the '::' weights add up to {total:g}; they must add up to more than 0 "
            "(negative weights only take away from positive ones)"
        )


def mix_embeddings(
    rows: Sequence[Sequence[tuple[str, float]]], encoded: dict[str, torch.Tensor]
) -> torch.Tensor:
    """One row per prompt: sum(w_i * e_i) / sum(w_i) of its parts' embeddings (``encoded``).

    A row of one part is its embedding as it is, no arithmetic, so an unweighted prompt gets
    bit-for-bit the conditioning diffusers would have given it. The sum runs in float32.
    """
    out = []
    for parts in rows:
        if len(parts) == 1:
            out.append(encoded[parts[0][0]])
            continue
        total = sum(weight for _, weight in parts)
        mixed = sum(weight * encoded[text].float() for text, weight in parts) / total
        out.append(mixed.to(encoded[parts[0][0]].dtype))
    return torch.stack(out)
