"""One job's state on its way through the worker's stages, shared by the stage modules.

Kept apart from ``generation/worker.py`` so the feeder, the GPU loop and the recorder can name it
without importing the worker that composes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.jobs import Job
from generation.scheduler import Entry

if TYPE_CHECKING:
    from generation.engine import GenerationResult
    from generation.request import GenerationRequest

COST_MODEL_KEY = "queue.seconds_per_cost_unit"


@dataclass(eq=False)
class Work:
    """One job on its way through the stages."""

    job: Job
    entry: Entry
    stage: str = "picked"  # picked -> generating -> post
    request: GenerationRequest | None = None
    cancelled: bool = False
    result: GenerationResult | None = None
    error: BaseException | None = None
    holds_post_slot: bool = False
    seconds: float = 0.0
    energy_joules: float | None = None  # its share of its batch's GPU energy; None: not measured


@dataclass(eq=False)
class Batch:
    works: list[Work]
    cost: float = field(init=False)

    def __post_init__(self) -> None:
        self.cost = sum(w.entry.cost for w in self.works)



def count_images(entry: Entry) -> int:
    return int(entry.payload.params.get("count") or 1)
