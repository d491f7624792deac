"""The worker's listener in the bot: a job's queue position, its progress and its result reach
the user's message.

The worker calls these on the event loop for every job (``generation/worker.py`` ``JobListener``);
after a restart it offers finished but undelivered jobs again, so delivery here is claimed
through the store and happens exactly once (``bot/delivery.py``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from bot import gate
from bot.delivery import remember_result_message
from bot.progress import progress_text, queue_text

if TYPE_CHECKING:
    from bot.delivery import Delivery
    from bot.progress import ProgressEditor
    from core.config import Settings
    from core.jobs import ImageRecord, Job
    from core.store import Store
    from generation.eta import Estimate

log = logging.getLogger(__name__)


class ResultListener:
    """Progress edits while a job waits and runs, then its delivery."""

    def __init__(
        self, store: Store, settings: Settings, delivery: Delivery, progress: ProgressEditor
    ) -> None:
        self.store = store
        self.settings = settings
        self.delivery = delivery
        self.progress = progress

    async def on_queued(self, job: Job, estimate: Estimate | None) -> None:
        if estimate is not None:
            self.progress.update(job, queue_text(estimate.position, estimate.eta_s), force=True)

    async def on_started(self, job: Job) -> None:
        self.progress.update(job, "Starting\u2026")

    async def on_progress(self, job: Job, event: Any) -> None:
        if not self.progress.would_edit(job):
            return  # skip the preview encode too
        preview = None
        if event.preview is not None:
            policy = await gate.policy_for(
                self.store, self.settings, job.guild_id, job.channel_id
            )
            # Made lazily from the latents, checked like the final image, encoded: off the loop.
            preview = await asyncio.to_thread(gate.checked_preview, job, event.preview, policy)
        self.progress.update(job, progress_text(event.step, event.total), preview)

    async def on_done(self, job: Job, images: list[ImageRecord]) -> None:
        await self._deliver(job)

    async def on_failed(self, job: Job, reason: str) -> None:
        await self._deliver(job)

    async def _deliver(self, job: Job) -> None:
        await self.progress.finish(job.id)
        try:
            message = await self.delivery.deliver(job.id)
        except Exception:
            log.exception(
                "job %s: delivery failed; it stays undelivered for the next start", job.id
            )
            return
        if message is not None:
            await remember_result_message(self.store, message.id, job.id)
