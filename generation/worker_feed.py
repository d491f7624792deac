"""Stage 1 of the worker: pick the next batch in fair order and prepare it beside the GPU.

Why a separate stage: the GPU must go straight from one batch to the next, so picking, marking
running and rebuilding requests (decoding init images) happen while the previous batch runs.
Also here: validating and pricing new requests, which runs on the same prepare thread.

A mixin of ``generation.worker.Worker``: it works on the worker's scheduler, store and queues.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import UserInputError
from core.jobs import Job, JobKind, JobStatus
from generation.scheduler import Entry
from generation.work import Batch, Work, count_images

if TYPE_CHECKING:
    from generation.request import GenerationRequest

# The worker's logger name, as before the split: log filters and tests key on it.
log = logging.getLogger("generation.worker")

UPSCALE_COST_FACTOR = 4.0  # a 2x upscale denoises four times the pixels of its source


class Feeder:
    """Keeps one prepared batch ahead of the GPU thread (``Worker._ready``)."""

    async def _feed(self) -> None:
        while True:
            await self._ahead.acquire()  # released when the GPU loop takes the prepared batch
            while (batch := self._pick_batch()) is None:
                self._wake.clear()
                await self._wake.wait()
            try:
                if not await self._prepare_batch(batch):
                    self._ahead.release()  # nothing left to run in it
            except Exception:  # noqa: BLE001 - e.g. the store is briefly locked; jobs stay safe
                log.exception("feeder: preparing a batch failed; its jobs go back to the queue")
                self._ahead.release()
                unfinished = [w for w in batch.works if w.job.id in self._active]
                await self._requeue(unfinished)
                for work in unfinished:
                    self.scheduler.push(work.entry)

    async def _prepare_batch(self, batch: Batch) -> bool:
        for work in batch.works:
            if not await self.store.mark_running(work.job.id):
                work.cancelled = True  # cancelled between pick and now
        live = [w for w in batch.works if not w.cancelled]
        prepared = await self._run_in(self._prep, self._prepare, live)
        for work, error in prepared:
            if error is not None:
                await self._finish_failed(work, error, JobStatus.FAILED)
        for work in batch.works:
            if work.cancelled:
                await self._finish_cancelled(work)
        works = [w for w, error in prepared if error is None and not w.cancelled]
        if works:
            self._ready.put(Batch(works))
        return bool(works)

    def _pick_batch(self) -> Batch | None:
        """The next job in fair order, plus the following ones while they can share its batch.

        Only an unbroken run of the fair order is co-batched, so nobody moves ahead of anyone;
        each job is still charged its own cost.
        """
        first = self.scheduler.pick()
        if first is None:
            return None
        works = [self._track(first)]
        images = count_images(first)
        if self.settings.queue.cobatch and first.batch_key is not None:
            limit = self.settings.model.max_batch
            while (nxt := self.scheduler.peek()) is not None and images + count_images(nxt) <= limit:
                if self.scheduler.pick(batch_key=first.batch_key) is None:
                    break
                works.append(self._track(nxt))
                images += count_images(nxt)
        return Batch(works)

    def _track(self, entry: Entry) -> Work:
        work = Work(entry.payload, entry)
        self._active[entry.job_id] = work
        return work

    def _prepare(self, works: list[Work]) -> list[tuple[Work, str | None]]:
        """Rebuild each request from its stored params (decoding init images). Prepare thread."""
        from generation.request import GenerationRequest

        out: list[tuple[Work, str | None]] = []
        for work in works:
            try:
                work.request = GenerationRequest.from_params(work.job.params)
                out.append((work, None))
            except UserInputError as exc:
                out.append((work, str(exc)))
            except Exception as exc:  # noqa: BLE001 - a broken row must not stop the queue
                log.exception("job %s: cannot rebuild its request", work.job.id)
                out.append((work, f"internal error while preparing the job: {exc}"))
        return out
    def _accept(
        self, job_id: str, request: GenerationRequest
    ) -> tuple[GenerationRequest, dict[str, Any], float, Any]:
        """Validate and price a new request (prepare thread); raises UserInputError."""
        validated = self.engine.validate(request)
        cost = self.engine.estimate_cost(validated)
        if validated.kind == JobKind.UPSCALE.value:
            if validated.init_image is None:
                raise UserInputError("an upscale needs the image to upscale")
            # Charged by the image it gets (an upscale of an upscale is 4x its parent's size).
            src = validated.init_image
            sized = validated.replace(count=1, width=src.width, height=src.height)
            cost = self.engine.estimate_cost(sized) * UPSCALE_COST_FACTOR
            key = None  # never co-batched
        elif validated.references:
            key = None  # one set of /blend images per pipeline call: never co-batched
        else:
            key = self.engine.batch_key(validated)
        init_path = None
        if validated.init_image is not None or validated.references:
            init_path = Path(self.settings.images_dir) / "inputs" / f"{job_id}.png"
        params = validated.to_params(init_image_path=init_path)
        json.dumps(params)  # fail here, not in the store, if something is not JSON-safe
        return validated, params, cost, key

    @staticmethod
    def _entry(job: Job, batch_key: Any) -> Entry:
        return Entry(
            job_id=job.id,
            user_id=job.user_id,
            guild_id=job.guild_id,
            cost=max(job.est_cost, 1e-9),
            seq=job.seq,
            weight=job.weight,
            batch_key=batch_key,
            payload=job,
        )

