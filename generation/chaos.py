"""``--chaos 0-100``: the images of one grid wander apart, each with its own guidance.

Why sub-requests: one pipeline call has one guidance scale, so a request whose images need
different ones runs as single-image requests (own seed, own guidance, no chaos), which co-batch
with anything of equal key, and their results are merged back into one for the original
request. Image 0 keeps the request's guidance, so with its seed it is the image ``--chaos 0``
would have made. Only guidance spreads: it is the one knob that changes composition and stays
reproducible from the request alone (``image_guidance``), so infotext and remote workers need no
extra state. A request that runs without guidance (1 or less: Turbo) is left as it is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from generation.request import MAX_GUIDANCE, GenerationRequest

if TYPE_CHECKING:
    from generation.results import GenerationResult, ProgressEvent

# Where image i's guidance sits in the spread, as a fraction of chaos% of the base guidance.
# Image 0 stays put; past the table the other offsets repeat.
OFFSETS = (0.0, -0.5, 0.5, 1.0, -1.0, 0.25, -0.25, 0.75, -0.75)


def spreads(req: GenerationRequest) -> bool:
    """Whether ``req`` (resolved) runs as one sub-request per image."""
    return req.chaos > 0 and req.count > 1 and req.guidance is not None and req.guidance > 1.0


def image_guidance(req: GenerationRequest, index: int) -> float | None:
    """The guidance image ``index`` of ``req`` was made with: g * (1 + chaos/100 * offset),
    within [1, MAX_GUIDANCE] and rounded to 0.01 so it reads back the same in infotext."""
    if not spreads(req) or index == 0:
        return req.guidance
    assert req.guidance is not None
    offset = OFFSETS[1 + (index - 1) % (len(OFFSETS) - 1)]
    spread = req.guidance * (1.0 + req.chaos / 100.0 * offset)
    return round(min(max(spread, 1.0), MAX_GUIDANCE), 2)


@dataclass
class ChaosPlan:
    """Sub-requests for an engine call, and how to put their results back together."""

    requests: list[GenerationRequest]  # what runs: sub-requests in place of spread ones
    originals: list[GenerationRequest]
    owner: list[int]  # request index -> original index
    part: list[int]  # request index -> which image of its original it makes

    @classmethod
    def of(cls, reqs: Sequence[GenerationRequest]) -> ChaosPlan:
        plan = cls([], list(reqs), [], [])
        for i, req in enumerate(reqs):
            if not spreads(req):
                plan.requests.append(req)
                plan.owner.append(i)
                plan.part.append(0)
                continue
            for k, seed in enumerate(req.seeds):
                plan.requests.append(
                    req.replace(seed=seed, count=1, guidance=image_guidance(req, k), chaos=0)
                )
                plan.owner.append(i)
                plan.part.append(k)
        return plan

    def progress(
        self, progress: Callable[[ProgressEvent], None] | None
    ) -> Callable[[ProgressEvent], None] | None:
        """``progress`` told about original requests: image k of a spread request counts as
        steps k*total+1 .. (k+1)*total of count*total (its sub-requests run one after another
        when their guidance differs)."""
        if progress is None or len(self.requests) == len(self.originals):
            return progress

        def mapped(event: ProgressEvent) -> None:
            index = event.request_index
            original = self.originals[self.owner[index]]
            if not spreads(original):
                progress(dataclasses.replace(event, request_index=self.owner[index]))
                return
            k = self.part[index]
            progress(
                dataclasses.replace(
                    event,
                    request_index=self.owner[index],
                    step=k * event.total + event.step,
                    total=original.count * event.total,
                )
            )

        return mapped

    def merge(self, results: list[GenerationResult]) -> list[GenerationResult]:
        """One result per original request, images and seeds in order."""
        if len(self.requests) == len(self.originals):
            return results
        merged: list[GenerationResult] = []
        for i, original in enumerate(self.originals):
            mine = [r for r, owner in zip(results, self.owner, strict=True) if owner == i]
            if not spreads(original):
                merged.append(mine[0])
                continue
            per_image = [r.timings.get("per_image_s", 0.0) for r in mine]
            merged.append(
                dataclasses.replace(
                    mine[0],
                    images=[img for r in mine for img in r.images],
                    seeds=[seed for r in mine for seed in r.seeds],
                    request=original,
                    timings={
                        "batch_s": sum(per_image),  # this request's share of its calls
                        "per_image_s": sum(per_image) / len(per_image),
                        "batch_images": float(len(mine)),
                        "chaos_calls": float(len(mine)),
                    },
                )
            )
        return merged
