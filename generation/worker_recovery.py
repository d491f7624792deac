"""Start-up recovery of the worker: what a stopped or crashed process left in the store.

Why it matters: nothing accepted may be lost or delivered twice across a restart, so jobs left
running are re-queued in their fair-order place and finished-but-undelivered ones are offered
to the listener again (the bot's delivery claim makes that at most once).

A mixin of ``generation.worker.Worker``: it works on the worker's store, scheduler and listener.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from core.jobs import Job, JobKind, JobStatus
from core.store import Recovery
from generation.work import COST_MODEL_KEY

# The worker's logger name, as before the split: log filters and tests key on it.
log = logging.getLogger("generation.worker")


class Recovering:
    """Puts the store's unfinished work back into this worker before it serves."""

    async def _recover(self) -> Recovery:
        """Load the learnt cost model, re-queue unfinished jobs, re-offer undelivered ones."""
        saved = await self.store.get_value(COST_MODEL_KEY)
        if saved:
            with contextlib.suppress(ValueError):
                self.cost_model.seconds_per_unit = max(float(saved), 1e-9)
        recovery = await self.store.recover()
        for job in recovery.queued:
            if job.id in self.scheduler:
                continue  # submitted to this worker before start()
            key = await self._run_in(self._prep, self._stored_batch_key, job)
            self.scheduler.push(self._entry(job, key))
        if recovery.requeued or recovery.queued:
            log.info(
                "resuming %d queued jobs (%d were running when the bot stopped)",
                len(recovery.queued), recovery.requeued,
            )
        for job in recovery.undelivered:
            if job.status == JobStatus.DONE:
                images = await self.store.images_for_job(job.id)
                self._notify("on_done", job, images)
            else:
                self._notify("on_failed", job, job.error or job.status.value)
        return recovery

    def _stored_batch_key(self, job: Job) -> Any:
        """Batch key of a recovered job, without decoding its init image."""
        if job.kind == JobKind.UPSCALE or job.params.get("init_image") or job.params.get("references"):
            return None  # image jobs run alone after a restart; correct, merely less batched
        from generation.request import GenerationRequest

        try:
            return self.engine.batch_key(GenerationRequest.from_params(job.params))
        except Exception:  # noqa: BLE001 - it will fail clearly when prepared
            return None
