"""Midjourney permutation prompts: ``a {red, blue} car --ar {1:1, 16:9}`` is four prompts.

A pure function of the text, so the bot can queue one job per combination and the rules can be
property-tested. Everything in braces is expanded, parameters included, before the prompt is
parsed. What Midjourney supports beyond that (nested braces, ``\\{`` escapes) is refused with a
message rather than guessed at: a wrong guess would queue up to ``limit`` jobs the user did not
mean.
"""

from __future__ import annotations

import itertools
import math

from core.errors import UserInputError


def expand_permutations(text: str, limit: int) -> list[str]:
    """Every combination of the ``{a, b, ...}`` groups of ``text``, in order, as full prompts.

    Returns ``[text]`` unchanged when there are no braces. Otherwise one string per combination
    (the cartesian product of the groups, the first group varying slowest), options stripped,
    empty options allowed (``a {, red} car`` -> ``a car``, ``a red car``) and runs of
    whitespace collapsed to one space. Raises ``UserInputError`` for unbalanced, nested or
    escaped braces, and when there would be more than ``limit`` combinations.
    """
    pieces, groups = _split_groups(text)
    if not groups:
        return [text]
    total = math.prod(len(options) for options in groups)
    if total > limit:
        sizes = " x ".join(str(len(options)) for options in groups)
        raise UserInputError(
            f"the {{...}} groups make {sizes} = {total} prompts; the limit is {limit} per "
            "message, so use fewer options or split it into several messages"
        )
    expanded = []
    for combination in itertools.product(*groups):
        parts = [pieces[0]]
        for option, piece in zip(combination, pieces[1:], strict=True):
            parts += [option, piece]
        expanded.append(" ".join("".join(parts).split()))
    return expanded


def _split_groups(text: str) -> tuple[list[str], list[list[str]]]:
    """The text between groups (one more than groups) and each group's options."""
    if "\\{" in text or "\\}" in text:
        raise UserInputError(
            "escaped braces (\\{ or \\}) are not supported; remove the backslash to make a "
            "{a, b} group, or the braces to write plain text"
        )
    pieces: list[str] = []
    groups: list[list[str]] = []
    rest = text
    while True:
        open_at, close_at = rest.find("{"), rest.find("}")
        if open_at < 0 and close_at < 0:
            pieces.append(rest)
            return pieces, groups
        if open_at < 0 or 0 <= close_at < open_at:
            raise UserInputError("a '}' has no '{' before it; permutations look like {red, blue}")
        close_at = rest.find("}", open_at)
        if close_at < 0:
            raise UserInputError("a '{' is never closed; permutations look like {red, blue}")
        body = rest[open_at + 1 : close_at]
        if "{" in body:
            raise UserInputError(
                "nested braces like {a, {b, c}} are not supported; write one flat group: {a, b, c}"
            )
        if "\\," in body:
            raise UserInputError(
                "escaped commas (\\,) inside {...} are not supported; every comma separates options"
            )
        pieces.append(rest[:open_at])
        groups.append([option.strip() for option in body.split(",")])
        rest = rest[close_at + 1 :]
