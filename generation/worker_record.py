"""Stage 3 of the worker: post-process, record in the store, then tell the listener.

Why the order matters: a job's images are on disk and recorded before ``listener.on_done``, and
every end (done, failed, cancelled, requeued) frees its scheduler slot and wakes ``join()``, so
nothing accepted is lost or reported twice.

A mixin of ``generation.worker.Worker``: it works on the worker's store, listener and pools.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from core import metrics
from core.errors import JobCancelled, OutOfMemory, UserInputError
from core.jobs import JobBlocked, JobStatus, Processed
from core.logging_setup import bind_job_id, job_context
from generation.work import COST_MODEL_KEY, Work

# The worker's logger name, as before the split: log filters and tests key on it.
log = logging.getLogger("generation.worker")


class Recorder:
    """Ends every job exactly once: done, failed, cancelled or back in the queue."""

    async def _after_generation(self, works: list[Work], seconds: float) -> None:
        """Back on the loop: free the users' running slots, then record or post-process."""
        for work in works:
            self._generating.pop(work.job.id, None)
            self.scheduler.finished(work.job.id)
        self._wake.set()
        total = sum(w.entry.cost for w in works) or 1.0
        ended = []
        for work in works:
            work.seconds = seconds * work.entry.cost / total  # each pays its share of a batch
            if work.error is None and not work.cancelled:
                work.stage = "post"
                task = asyncio.create_task(self._postprocess(work))
                self._post_tasks.add(task)
                task.add_done_callback(self._post_tasks.discard)
            else:  # failed, or cancelled before it started or during its last step
                self._release_post_slot(work)
                work.result = None
                ended.append(work)
        for work in ended:
            try:
                if work.error is not None:
                    await self._generation_failed(work, work.error)
                else:
                    await self._finish_cancelled(work)
            except Exception:  # noqa: BLE001 - e.g. the store is gone; the row stays running
                log.exception("job %s: recording its end failed; it reruns after a restart",
                              work.job.id)
                self._done(work)
                await self._notify_idle()
        if seconds > 0 and works and not ended:
            self.cost_model.observe(total, seconds)
            self._observed += 1
            if self._observed % 20 == 0:  # remembered across restarts, crash or not
                with contextlib.suppress(Exception):
                    await self.store.set_value(
                        COST_MODEL_KEY, repr(self.cost_model.seconds_per_unit)
                    )

    def _release_post_slot(self, work: Work) -> None:
        if work.holds_post_slot:
            work.holds_post_slot = False
            self._post_slots.release()

    async def _generation_failed(self, work: Work, exc: BaseException) -> None:
        if isinstance(exc, JobCancelled):
            if work.cancelled:
                await self._finish_cancelled(work)
            else:  # stopped by stop(finish_running=False): it runs again next time
                await self._requeue([work])
            return
        if isinstance(exc, OutOfMemory):
            reason = (
                "the GPU ran out of memory for this job; try fewer images (--n) or a smaller "
                "size"
            )
        elif isinstance(exc, UserInputError):
            reason = str(exc)
        else:  # logged with its traceback on the GPU thread (``_detached``)
            log.error("job %s: generation failed: %s: %s", work.job.id, type(exc).__name__, exc)
            reason = f"generation failed: {type(exc).__name__}: {exc}"
        await self._finish_failed(work, reason, JobStatus.FAILED)

    # --- stage 3: post-process, record, report -------------------------------------------------

    async def _postprocess(self, work: Work) -> None:
        job = work.job
        bind_job_id(job.id)  # this task's log lines (and its thread's) carry the job id
        try:
            try:
                processed = await self._run_in(self._post, self.postprocess, job, work.result)
            finally:
                self._release_post_slot(work)
                work.result = None  # free the images
            if isinstance(processed, list):
                processed = Processed(processed)
            images = await self.store.mark_done(
                job.id, processed, measured_seconds=work.seconds, energy_joules=work.energy_joules
            )
            if not images and processed.images:
                return  # cancelled meanwhile; already reported
            stored = await self.store.get_job(job.id)
            self._done(work)
            await self._call_listener("on_done", stored or job, images)
        except JobBlocked as exc:
            await self._finish_failed(work, str(exc), JobStatus.BLOCKED)
        except UserInputError as exc:
            await self._finish_failed(work, str(exc), JobStatus.FAILED)
        except Exception as exc:  # noqa: BLE001
            log.exception("job %s: post-processing failed", job.id)
            await self._finish_failed(work, f"post-processing failed: {exc}", JobStatus.FAILED)
        finally:
            await self._done_async(work)

    async def _finish_failed(self, work: Work, reason: str, status: JobStatus) -> None:
        await self.store.mark_failed(work.job.id, reason, status=status)
        job = await self.store.get_job(work.job.id) or work.job
        self._done(work)
        await self._call_listener("on_failed", job, reason)
        await self._notify_idle()

    async def _finish_cancelled(self, work: Work) -> None:
        await self.store.mark_failed(work.job.id, "cancelled", status=JobStatus.CANCELLED)
        job = await self.store.get_job(work.job.id) or work.job
        self._done(work)
        await self._call_listener("on_failed", job, "cancelled")
        await self._notify_idle()

    async def _requeue(self, works: list[Work]) -> None:
        for work in works:
            await self.store.requeue(work.job.id)
            self.scheduler.finished(work.job.id)
            self._done(work)
        await self._notify_idle()

    def _done(self, work: Work) -> None:
        self._active.pop(work.job.id, None)
        self.scheduler.finished(work.job.id)

    async def _done_async(self, work: Work) -> None:
        self._done(work)
        await self._notify_idle()

    async def _notify_idle(self) -> None:
        async with self._idle:
            self._idle.notify_all()
    async def _run_in(self, pool: ThreadPoolExecutor, fn: Callable[..., Any], *args: Any) -> Any:
        ctx = contextvars.copy_context()  # the thread logs with the caller's job id
        return await asyncio.get_running_loop().run_in_executor(pool, ctx.run, fn, *args)

    def _notify(self, method: str, *args: Any) -> None:
        """Call a listener method in its own task (used from callbacks and hot paths)."""
        task = asyncio.create_task(self._call_listener(method, *args))
        self._listener_tasks.add(task)
        task.add_done_callback(self._listener_tasks.discard)

    async def _call_listener(self, method: str, *args: Any) -> None:
        metrics.observe_job_event(method, *args)
        try:
            with job_context(getattr(args[0], "id", None) if args else None):
                await getattr(self.listener, method)(*args)
        except Exception:  # noqa: BLE001 - a Discord hiccup must not stop the queue
            log.exception("listener %s failed", method)

