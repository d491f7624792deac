"""Stage 2 of the worker: the one GPU thread, running prepared batches back to back.

Why a thread of its own: torch blocks, and the GPU must never wait on the event loop, so this
thread pulls batches straight from ``Worker._ready`` and hops results back with
``call_soon_threadsafe``. A co-batch that runs out of memory is retried job by job.

A mixin of ``generation.worker.Worker``: it works on the worker's engine, queues and counters.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from core import metrics
from core.config import usable_cores
from core.errors import JobCancelled, OutOfMemory, UserInputError
from core.jobs import JobKind, JobStatus
from core.logging_setup import job_context
from generation.work import Work

if TYPE_CHECKING:
    from generation.engine import Engine, ProgressEvent

# The worker's logger name, as before the split: log filters and tests key on it.
log = logging.getLogger("generation.worker")

# Progress reaches the loop for the first and last step and at most this often in between: the
# bot edits a message every 1.5 s, and each event costs a loop wake-up (and, on a GPU, a sync).
PROGRESS_INTERVAL_S = 0.25


def leave_a_core_for_the_pipeline(engine: Engine) -> int | None:
    """When the "GPU" is the CPU, torch gets every core but one; the stages around it get that one.

    torch's parallel regions wait for their slowest thread, so post-processing or the event loop
    taking a core from a full-width region stalls every step (bench/worker.py on 2 cores:
    worker/bare throughput 0.31 with 2 torch threads, 0.87 with 1). Process-wide on purpose:
    a process running a worker is a server, and torch's thread pools are per process.

    Returns the thread count (None off the CPU). A thread that already ran a torch parallel
    region keeps the count it started with, so the thread that generates must set it again
    itself (``Worker._gpu_main`` does).
    """
    if getattr(getattr(engine, "device", None), "type", None) != "cpu":
        return None
    import torch

    threads = max(1, usable_cores() - 1)
    torch.set_num_threads(threads)
    return threads


class DeviceTask:
    """A short piece of work (a /describe caption) the GPU thread runs between two batches.

    Why on the GPU thread itself: then it can never overlap a denoising call (no second
    model's activations beside a batch's) and it takes its turn in order, right after the
    batch prepared before it, however long the backlog.
    """

    def __init__(self, fn: Callable[[], Any], loop: asyncio.AbstractEventLoop) -> None:
        self.fn = fn
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()

    def run(self) -> None:
        try:
            value = self.fn()
        except BaseException as exc:  # noqa: BLE001 - the caller gets it, the thread lives on
            self.loop.call_soon_threadsafe(_settle, self.future, None, exc)
        else:
            self.loop.call_soon_threadsafe(_settle, self.future, value, None)

    def cancel(self) -> None:
        """The worker stopped before its turn (called on the event loop)."""
        if not self.future.done():
            self.future.cancel()


def _settle(future: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if future.done():  # the caller gave up waiting
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)


class GpuLoop:
    """The GPU thread's loop and the batch runner with its out-of-memory fallback."""

    def _gpu_main(self) -> None:
        """The GPU thread: take a prepared batch, generate, hand the results back, repeat."""
        loop = self._loop
        assert loop is not None
        if self._torch_threads is not None:
            import torch

            torch.set_num_threads(self._torch_threads)  # see leave_a_core_for_the_pipeline
        while (batch := self._ready.get()) is not None:
            if isinstance(batch, DeviceTask):
                batch.run()  # between two batches: nothing else is on the device
                continue
            works = [w for w in batch.works if not w.cancelled]
            for work in works:
                work.stage = "generating"
            # One wake-up of the loop, not two: each one takes the GIL from this thread.
            loop.call_soon_threadsafe(self._started, works)
            self._gpu_started = time.monotonic()
            self._gpu_batch_cost = sum(w.entry.cost for w in works)
            with (
                metrics.gpu_busy(),
                self.energy.batch(functools.partial(_images_made, works)) as energy,
                job_context(",".join(w.job.id for w in works)),
            ):
                seconds = self._generate_blocking(works) if works else 0.0
            # Each job that ran pays its share of the batch by cost, as for its seconds.
            shares = energy.shares([w.entry.cost for w in works])
            for work, joules in zip(works, shares, strict=True):
                work.energy_joules = joules
            self._gpu_batch_cost = 0.0
            for work in works:
                if work.result is not None:
                    self._post_slots.acquire()  # bounded: a slow post-process holds the GPU back
                    work.holds_post_slot = True
            loop.call_soon_threadsafe(self._record_batch, batch.works, seconds)

    def _started(self, works: list[Work]) -> None:
        self._ahead.release()  # the feeder may prepare the next batch
        now = time.time()
        for work in works:
            work.job.status, work.job.started_at = JobStatus.RUNNING, now
            self._generating[work.job.id] = work
            self._notify("on_started", work.job)

    def _record_batch(self, works: list[Work], seconds: float) -> None:
        task = asyncio.create_task(self._after_generation(works, seconds))
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    def _generate_blocking(self, works: list[Work]) -> float:
        """GPU thread: run the batch, leaving a result or an error on each work; returns seconds.

        When a co-batch runs out of memory, its jobs are retried one by one (alone each may fit).
        """
        loop = self._loop
        assert loop is not None
        started = time.perf_counter()
        retry = False
        try:
            self._run_on_device(works, loop)
        except OutOfMemory as exc:
            if len(works) == 1:
                works[0].error = _detached(exc)
            else:
                retry = True
        except BaseException as exc:  # noqa: BLE001 - recorded on every job of the batch
            for work in works:
                work.error = _detached(exc)
        if retry:
            # Outside the except block: the failed batch's frames (and the activations they
            # hold) are released before the first retry allocates.
            log.warning("batch of %d jobs ran out of memory; retrying one by one", len(works))
            for work in works:
                work.result = None
                try:
                    self._run_on_device([work], loop)
                except BaseException as one:  # noqa: BLE001 - recorded on the job
                    work.error = _detached(one)
        self.gpu_intervals.append((started, time.perf_counter()))
        return time.perf_counter() - started

    def _run_on_device(self, works: list[Work], loop: asyncio.AbstractEventLoop) -> None:
        by_index = dict(enumerate(works))

        def progress(event: ProgressEvent) -> None:
            work = by_index.get(event.request_index)
            if work is not None:
                loop.call_soon_threadsafe(self._notify, "on_progress", work.job, event)

        def should_cancel() -> bool:
            return self._abort or all(w.cancelled for w in works)

        if len(works) == 1 and works[0].job.kind == JobKind.UPSCALE:
            req = works[0].request
            assert req is not None and req.init_image is not None
            parent = req.replace(init_image=None)
            works[0].result = self.engine.upscale(
                req.init_image, parent, seed=req.seed, progress=progress,
                should_cancel=should_cancel,
            )
            return
        reqs = [w.request for w in works]
        results = self.engine.generate(
            reqs, progress=progress, should_cancel=should_cancel,
            progress_interval_s=PROGRESS_INTERVAL_S,
        )
        for work, result in zip(works, results, strict=True):
            work.result = result


def _images_made(works: list[Work]) -> int:
    return sum(len(w.result.images) for w in works if w.result is not None)


def _detached(exc: BaseException) -> BaseException:
    """The exception to keep on a job: an expected one (OOM, cancel, bad input) without its
    traceback and chain, whose frames would keep a failed batch's tensors alive on the GPU;
    anything else is logged here with its traceback first."""
    if not isinstance(exc, (OutOfMemory, JobCancelled, UserInputError)):
        log.error("generation failed", exc_info=exc)
    exc.__context__ = exc.__cause__ = None
    return exc.with_traceback(None)

