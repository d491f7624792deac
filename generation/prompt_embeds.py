"""The prompt arguments of one pipeline call: SDXL's empty negatives zeroed per row, and
``a cat::2 a dog`` multi-prompts mixed (``generation/prompt_weights.py``).

Why apart from ``engine.py``: it is the one place the engine encodes prompts itself instead of
leaving it to diffusers, and the reasons (below) are subtle enough to want a module of their own.
"""

from __future__ import annotations

from typing import Any

import torch

from generation.prompt_weights import mix_embeddings, split_weighted


def prompt_kwargs(
    pipe: Any,
    prompts: list[str],
    negatives: list[str],
    *,
    guided: bool,
    xl: bool,
    device: torch.device | str,
) -> dict[str, Any]:
    """The prompt arguments of one pipeline call.

    A batch in which some row has ``::`` parts is encoded here, each distinct part once, and
    each row gets the weighted mean of its parts' embeddings (and pooled embeddings on SDXL);
    rows of one part keep exactly the embedding diffusers would have made from their text, and
    the negatives go on as below.
    """
    rows = [split_weighted(p) if "::" in p else [(p, 1.0)] for p in prompts]
    texts = [parts[0][0] if len(parts) == 1 else p for parts, p in zip(rows, prompts, strict=True)]
    if not guided:
        kwargs: dict[str, Any] = {"prompt": texts, "negative_prompt": None}
    else:
        zeros = xl and bool(getattr(pipe.config, "force_zeros_for_empty_prompt", False))
        kwargs = _guided_kwargs(pipe, texts, negatives, zeros=zeros, device=device)
    if all(len(parts) == 1 for parts in rows):
        return kwargs
    distinct = list(dict.fromkeys(text for parts in rows for text, _ in parts))
    encoded = pipe.encode_prompt(
        prompt=distinct, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
    )
    kwargs.pop("prompt", None)
    kwargs["prompt_embeds"] = mix_embeddings(rows, dict(zip(distinct, encoded[0], strict=True)))
    if xl:
        pooled = dict(zip(distinct, encoded[2], strict=True))
        kwargs["pooled_prompt_embeds"] = mix_embeddings(rows, pooled)
    return kwargs


def _guided_kwargs(
    pipe: Any, prompts: list[str], negatives: list[str], *, zeros: bool, device: torch.device | str
) -> dict[str, Any]:
    """The prompt arguments of a guided call, negatives included.

    SDXL models are trained with an all-zero embedding for "no negative prompt"
    (``force_zeros_for_empty_prompt``), but diffusers zeroes only when no negative prompt is
    passed at all. A co-batch mixing empty and non-empty negatives is encoded here, with the
    empty rows zeroed, so every image is what its request would give alone.
    """
    empty = [not n for n in negatives]
    if not zeros or not any(empty):
        return {"prompt": prompts, "negative_prompt": negatives}
    if all(empty):
        return {"prompt": prompts, "negative_prompt": None}  # diffusers zeroes them
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
        prompt=prompts,
        device=device,
        num_images_per_prompt=1,
        do_classifier_free_guidance=True,
        negative_prompt=negatives,
    )
    rows = torch.tensor(empty, device=negative.device)
    return {
        "prompt_embeds": embeds,
        "negative_prompt_embeds": negative.masked_fill(rows[:, None, None], 0.0),
        "pooled_prompt_embeds": pooled,
        "negative_pooled_prompt_embeds": negative_pooled.masked_fill(rows[:, None], 0.0),
    }
