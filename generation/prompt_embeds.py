"""The prompt arguments of one pipeline call, with SDXL's empty negatives zeroed per row.

Why apart from ``engine.py``: it is the one place the engine encodes prompts itself instead of
leaving it to diffusers, and the reason (below) is subtle enough to want a module of its own.
"""

from __future__ import annotations

from typing import Any

import torch


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

    SDXL models are trained with an all-zero embedding for "no negative prompt"
    (``force_zeros_for_empty_prompt``), but diffusers zeroes only when no negative prompt is
    passed at all. A co-batch mixing empty and non-empty negatives is encoded here, with the
    empty rows zeroed, so every image is what its request would give alone.
    """
    if not guided:
        return {"prompt": prompts, "negative_prompt": None}
    empty = [not n for n in negatives]
    zeros = xl and bool(getattr(pipe.config, "force_zeros_for_empty_prompt", False))
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
