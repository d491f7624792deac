"""The single GPU consumer: takes jobs in fair order, generates, post-processes, reports.

Why three stages: the GPU must go straight from one job to the next while there is a backlog,
so everything that is not denoising happens beside it. While batch N is on the GPU thread, the
*feeder* already picked batch N+1 and rebuilt its requests (init images decoded), and a small
thread pool post-processes batch N-1 (moderation, watermark, encode, save). Hand-offs are
bounded (one batch prepared ahead, a few post-processing at once), so a slow stage pushes back
instead of piling up memory. The asyncio loop only coordinates: torch runs on the one GPU
thread, and progress hops back with ``call_soon_threadsafe``.

Durability: a job's row is committed before the user hears "queued"; its images are on disk and
recorded before ``listener.on_done``; the bot claims delivery with ``store.mark_delivered`` (the
first caller wins), so a restart never delivers twice. At start-up, jobs left running are
re-queued and finished-but-undelivered ones are offered to the listener again.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import hashlib
import io
import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from core import metrics
from core.config import Settings, usable_cores
from core.errors import JobCancelled, OutOfMemory, UserInputError
from core.jobs import (
    ImageRecord,
    Job,
    JobBlocked,
    JobKind,
    JobStatus,
    Processed,
    ProcessedImage,
    new_job_id,
)
from core.logging_setup import bind_job_id, job_context
from core.store import Recovery, Store
from generation.admission import Admission, Reservation
from generation.eta import CostModel, Estimate, EtaEstimator
from generation.scheduler import Entry, Scheduler

if TYPE_CHECKING:
    from generation.engine import Engine, GenerationResult, ProgressEvent
    from generation.request import GenerationRequest

log = logging.getLogger(__name__)

COST_MODEL_KEY = "queue.seconds_per_cost_unit"
UPSCALE_COST_FACTOR = 4.0  # a 2x upscale denoises four times the pixels of its source
# Progress reaches the loop for the first and last step and at most this often in between: the
# bot edits a message every 1.5 s, and each event costs a loop wake-up (and, on a GPU, a sync).
PROGRESS_INTERVAL_S = 0.25
GPU_INTERVALS_KEPT = 10_000


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


class JobListener(Protocol):
    """How the bot hears about jobs. All methods are awaited on the event loop; keep them quick
    (start a task for slow Discord calls). Exceptions are logged and do not stop the worker."""

    async def on_queued(self, job: Job, estimate: Estimate | None) -> None: ...
    async def on_started(self, job: Job) -> None: ...
    async def on_progress(self, job: Job, event: ProgressEvent) -> None: ...
    async def on_done(self, job: Job, images: list[ImageRecord]) -> None: ...
    async def on_failed(self, job: Job, reason: str) -> None: ...


class NullListener:
    """A listener that ignores everything (CLI, benchmarks)."""

    async def on_queued(self, job: Job, estimate: Estimate | None) -> None:
        pass

    async def on_started(self, job: Job) -> None:
        pass

    async def on_progress(self, job: Job, event: ProgressEvent) -> None:
        pass

    async def on_done(self, job: Job, images: list[ImageRecord]) -> None:
        pass

    async def on_failed(self, job: Job, reason: str) -> None:
        pass


Postprocess = Callable[[Job, "GenerationResult"], "Processed | list[ProcessedImage]"]


def save_pngs(images_dir: Path) -> Postprocess:
    """The default post-processing: save PNGs (with their parameters) and a grid, nothing else.

    The real one (moderation, watermark, provenance) is ``moderation.postprocess``; this default
    keeps ``generation`` usable on its own (CLI, benchmarks, tests).
    """

    def postprocess(job: Job, result: GenerationResult) -> Processed:
        from PIL.PngImagePlugin import PngInfo

        folder = Path(images_dir) / job.id
        folder.mkdir(parents=True, exist_ok=True)
        out = []
        for index, (image, seed) in enumerate(zip(result.images, result.seeds, strict=True)):
            info = PngInfo()
            info.add_text("parameters", result.infotext(index))
            path = folder / f"{index}.png"
            buf = io.BytesIO()  # encode in memory, write once: fewer GIL hand-offs than a file
            image.save(buf, format="PNG", pnginfo=info)
            path.write_bytes(buf.getvalue())
            digest = hashlib.sha256(buf.getvalue()).hexdigest()
            out.append(ProcessedImage(index, seed, path, image.width, image.height, digest))
        grid = None
        if len(result.images) > 1:
            grid = folder / "grid.png"
            result.grid.save(grid, format="PNG")
        return Processed(out, grid)

    return postprocess


@dataclass(eq=False)
class _Work:
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
class _Batch:
    works: list[_Work]
    cost: float = field(init=False)

    def __post_init__(self) -> None:
        self.cost = sum(w.entry.cost for w in self.works)


class Worker:
    """Owns the scheduler, the GPU thread and the stage tasks. One per process.

    ``await start()`` recovers from the store and begins serving; ``await submit(...)`` queues a
    request; ``await stop()`` lets the running batch finish (or, with ``finish_running=False``,
    stops it at the next step and re-queues it) - nothing accepted is ever lost.
    """

    def __init__(
        self,
        store: Store,
        engine: Engine,
        settings: Settings,
        *,
        postprocess: Postprocess | None = None,
        listener: JobListener | None = None,
    ) -> None:
        self.store = store
        self.engine = engine
        self.settings = settings
        self.postprocess = postprocess or save_pngs(settings.images_dir)
        self.listener: JobListener = listener or NullListener()
        q = settings.queue
        self.scheduler = Scheduler(
            mode=q.mode,
            max_running_per_user=q.max_running_per_user,
            fifo_guilds=set(q.fifo_guilds),
        )
        # Caps are reserved in one synchronous step (see generation/admission.py).
        self.admission = Admission(self._user_counts, max_queued_per_user=q.max_queued_per_user)
        self.cost_model = CostModel(q.seconds_per_cost_unit)
        self.eta = EtaEstimator(self.scheduler, self.cost_model)
        self._gpu = ThreadPoolExecutor(1, thread_name_prefix="imagine-gpu")
        self._prep = ThreadPoolExecutor(1, thread_name_prefix="imagine-prepare")
        self._post = ThreadPoolExecutor(q.postprocess_threads, thread_name_prefix="imagine-post")
        # Taken by the GPU thread for each finished job, given back when its post-processing
        # ends: if post-processing falls behind, the GPU waits instead of piling up images.
        # At least one slot per job of a full batch, or a batch could wait on itself.
        self._post_slots = threading.BoundedSemaphore(
            max(q.postprocess_threads * 2, settings.model.max_batch)
        )
        # The GPU thread pulls batches straight from here, so going from one batch to the next
        # never waits on the event loop.
        self._ready: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        # One batch prepared ahead, picked the moment the GPU takes the previous one: late
        # enough to co-batch everything queued by then, early enough that the GPU never waits.
        self._ahead = asyncio.Semaphore(1)
        self._gpu_done: asyncio.Future[None] | None = None
        self._recording: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Condition()
        self._tasks: list[asyncio.Task[Any]] = []
        self._post_tasks: set[asyncio.Task[Any]] = set()
        self._listener_tasks: set[asyncio.Task[Any]] = set()
        self._active: dict[str, _Work] = {}  # picked, not yet finished (prepared/generating/post)
        self._generating: dict[str, _Work] = {}
        self._gpu_started = 0.0
        self._gpu_batch_cost = 0.0
        self._abort = False
        self._stopping = False
        self._observed = 0  # batches measured by the cost model
        self._loop: asyncio.AbstractEventLoop | None = None
        # GPU busy intervals (perf_counter), for benchmarks and the idle-gap figure; the most
        # recent ones only, so a server running for months does not grow it without bound.
        self.gpu_intervals: deque[tuple[float, float]] = deque(maxlen=GPU_INTERVALS_KEPT)
        self._torch_threads: int | None = None  # set by start() when generating on the CPU
        # The GPU's energy counter, read around each batch (tests give it a fake counter).
        self.energy: metrics.GpuEnergy = metrics.gpu_energy

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> Recovery:
        """Recover from the store, then serve. Returns what was recovered."""
        self._loop = asyncio.get_running_loop()
        self._torch_threads = leave_a_core_for_the_pipeline(self.engine)
        metrics.watch_worker(self)  # health + queue gauge follow this worker
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
        self._tasks = [asyncio.create_task(self._feed(), name="imagine-feeder")]
        self._gpu_done = self._loop.run_in_executor(self._gpu, self._gpu_main)
        self._wake.set()
        return recovery

    async def stop(self, *, finish_running: bool = True) -> None:
        """Stop serving without losing anything: queued jobs stay queued in the store.

        The batch on the GPU finishes (and is post-processed and reported), or with
        ``finish_running=False`` stops at its next step and goes back to the queue.
        """
        self._stopping = True
        self._abort = not finish_running
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._gpu_done is not None:
            with contextlib.suppress(queue.Empty):
                while True:  # prepared but not started: requeued just below
                    self._ready.get_nowait()
            self._ready.put(None)  # the GPU thread ends after the batch it is running
            await self._gpu_done
            self._gpu_done = None
        while self._recording:
            await asyncio.gather(*list(self._recording), return_exceptions=True)
        # Picked or prepared but never started: back to the queue, in the store.
        await self._requeue([w for w in list(self._active.values()) if w.stage == "picked"])
        while self._post_tasks:
            await asyncio.gather(*list(self._post_tasks), return_exceptions=True)
        while self._listener_tasks:
            await asyncio.gather(*list(self._listener_tasks), return_exceptions=True)
        await self.store.set_value(COST_MODEL_KEY, repr(self.cost_model.seconds_per_unit))
        self._tasks = []
        for pool in (self._gpu, self._prep, self._post):
            pool.shutdown(wait=True)
        metrics.worker_stopped()

    async def join(self) -> None:
        """Wait until the queue is empty and every picked job has been reported."""
        async with self._idle:
            await self._idle.wait_for(lambda: not self.scheduler and not self._active)
        while self._listener_tasks:
            await asyncio.gather(*list(self._listener_tasks), return_exceptions=True)

    # --- what the bot calls --------------------------------------------------------------------

    async def submit(
        self,
        request: GenerationRequest,
        *,
        user_id: int,
        guild_id: int | None = None,
        channel_id: int | None = None,
        parent_job_id: str | None = None,
        parent_image_index: int | None = None,
        credited_user_ids: Iterable[int] = (),
        weight: float = 1.0,
        delivery: dict[str, Any] | None = None,
        reservation: Reservation | None = None,
    ) -> Job:
        """Validate, store (committed) and queue a request; returns the job.

        Raises ``UserInputError`` (nothing is stored) when the request is invalid or the user
        already has ``queue.max_queued_per_user`` jobs waiting. ``request.kind`` picks the job
        kind; for ``upscale`` the request is the parent's with ``init_image`` = the image to
        upscale (the worker calls ``engine.upscale``).
        """
        if self._stopping:
            raise UserInputError("the bot is restarting; try again in a minute")
        if not weight > 0:
            raise ValueError("weight must be positive")
        if reservation is None or not reservation.held:
            # Before the first await: concurrent submits cannot all pass the cap.
            reservation = self.admission.reserve(user_id)
        try:
            job_id = new_job_id()
            request, params, cost, key = await self._run_in(
                self._prep, self._accept, job_id, request
            )
            job = Job(
                id=job_id,
                user_id=user_id,
                guild_id=guild_id,
                channel_id=channel_id,
                kind=JobKind(request.kind),
                params=params,
                est_cost=cost,
                parent_job_id=parent_job_id,
                parent_image_index=parent_image_index,
                credited_user_ids=list(credited_user_ids),
                weight=weight,
                delivery=dict(delivery or {}),
            )
            await self.store.add_job(job)
            self.scheduler.push(self._entry(job, key))  # the queue counts it from here on
        finally:
            reservation.release()
        self._wake.set()
        await self._call_listener("on_queued", job, self.estimate(job.id))
        return job

    def _user_counts(self, user_id: int) -> tuple[int, int]:
        """(queued, queued + running) of a user, from memory (no await: see Admission)."""
        queued = self.scheduler.queued_for_user(user_id)
        running = sum(1 for w in self._active.values() if w.job.user_id == user_id)
        return queued, queued + running

    async def cancel(self, job_id: str, *, user_id: int | None = None) -> bool:
        """Cancel a queued job (removed at once) or a running one (stops at its next step).

        With ``user_id``, only that user's own job may be cancelled. False when the job is
        already finished or being post-processed.
        """
        job = await self.store.get_job(job_id)
        if job is None:
            raise UserInputError(f"there is no job {job_id}")
        if user_id is not None and job.user_id != user_id:
            raise UserInputError(f"job {job_id} is not yours; you can only cancel your own jobs")
        work = self._active.get(job_id)
        if work is not None and work.stage != "post":
            work.cancelled = True  # polled by the GPU thread every step; the feeder skips it too
        if self.scheduler.remove(job_id) is not None or job.status == JobStatus.QUEUED:
            if await self.store.cancel(job_id):
                await self._notify_idle()
                return True
        return work is not None and work.cancelled

    def estimate(self, job_id: str) -> Estimate | None:
        """Queue position and ETA of a queued job (None once it started)."""
        return self.eta.estimate(job_id, self._running_left_s())

    def estimates(self, only: Collection[str] | None = None) -> dict[str, Estimate]:
        """Queued jobs' positions and ETAs in one pass; ``only``: just these (stops at the last
        of them, so a user's /queue does not walk a 10,000-job queue to its end)."""
        return self.eta.estimates(self._running_left_s(), only=only)

    # --- stage 1: pick and prepare ------------------------------------------------------------

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

    async def _prepare_batch(self, batch: _Batch) -> bool:
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
            self._ready.put(_Batch(works))
        return bool(works)

    def _pick_batch(self) -> _Batch | None:
        """The next job in fair order, plus the following ones while they can share its batch.

        Only an unbroken run of the fair order is co-batched, so nobody moves ahead of anyone;
        each job is still charged its own cost.
        """
        first = self.scheduler.pick()
        if first is None:
            return None
        works = [self._track(first)]
        images = _count(first)
        if self.settings.queue.cobatch and first.batch_key is not None:
            limit = self.settings.model.max_batch
            while (nxt := self.scheduler.peek()) is not None and images + _count(nxt) <= limit:
                if self.scheduler.pick(batch_key=first.batch_key) is None:
                    break
                works.append(self._track(nxt))
                images += _count(nxt)
        return _Batch(works)

    def _track(self, entry: Entry) -> _Work:
        work = _Work(entry.payload, entry)
        self._active[entry.job_id] = work
        return work

    def _prepare(self, works: list[_Work]) -> list[tuple[_Work, str | None]]:
        """Rebuild each request from its stored params (decoding init images). Prepare thread."""
        from generation.request import GenerationRequest

        out: list[tuple[_Work, str | None]] = []
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

    # --- stage 2: the GPU ----------------------------------------------------------------------

    def _gpu_main(self) -> None:
        """The GPU thread: take a prepared batch, generate, hand the results back, repeat."""
        loop = self._loop
        assert loop is not None
        if self._torch_threads is not None:
            import torch

            torch.set_num_threads(self._torch_threads)  # see leave_a_core_for_the_pipeline
        while (batch := self._ready.get()) is not None:
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

    def _started(self, works: list[_Work]) -> None:
        self._ahead.release()  # the feeder may prepare the next batch
        now = time.time()
        for work in works:
            work.job.status, work.job.started_at = JobStatus.RUNNING, now
            self._generating[work.job.id] = work
            self._notify("on_started", work.job)

    def _record_batch(self, works: list[_Work], seconds: float) -> None:
        task = asyncio.create_task(self._after_generation(works, seconds))
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    def _generate_blocking(self, works: list[_Work]) -> float:
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

    def _run_on_device(self, works: list[_Work], loop: asyncio.AbstractEventLoop) -> None:
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

    async def _after_generation(self, works: list[_Work], seconds: float) -> None:
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

    def _release_post_slot(self, work: _Work) -> None:
        if work.holds_post_slot:
            work.holds_post_slot = False
            self._post_slots.release()

    async def _generation_failed(self, work: _Work, exc: BaseException) -> None:
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

    async def _postprocess(self, work: _Work) -> None:
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

    async def _finish_failed(self, work: _Work, reason: str, status: JobStatus) -> None:
        await self.store.mark_failed(work.job.id, reason, status=status)
        job = await self.store.get_job(work.job.id) or work.job
        self._done(work)
        await self._call_listener("on_failed", job, reason)
        await self._notify_idle()

    async def _finish_cancelled(self, work: _Work) -> None:
        await self.store.mark_failed(work.job.id, "cancelled", status=JobStatus.CANCELLED)
        job = await self.store.get_job(work.job.id) or work.job
        self._done(work)
        await self._call_listener("on_failed", job, "cancelled")
        await self._notify_idle()

    async def _requeue(self, works: list[_Work]) -> None:
        for work in works:
            await self.store.requeue(work.job.id)
            self.scheduler.finished(work.job.id)
            self._done(work)
        await self._notify_idle()

    def _done(self, work: _Work) -> None:
        self._active.pop(work.job.id, None)
        self.scheduler.finished(work.job.id)

    async def _done_async(self, work: _Work) -> None:
        self._done(work)
        await self._notify_idle()

    async def _notify_idle(self) -> None:
        async with self._idle:
            self._idle.notify_all()

    # --- helpers -------------------------------------------------------------------------------

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
        else:
            key = self.engine.batch_key(validated)
        init_path = None
        if validated.init_image is not None:
            init_path = Path(self.settings.images_dir) / "inputs" / f"{job_id}.png"
        params = validated.to_params(init_image_path=init_path)
        json.dumps(params)  # fail here, not in the store, if something is not JSON-safe
        return validated, params, cost, key

    def _stored_batch_key(self, job: Job) -> Any:
        """Batch key of a recovered job, without decoding its init image."""
        if job.kind == JobKind.UPSCALE or job.params.get("init_image"):
            return None  # image jobs run alone after a restart; correct, merely less batched
        from generation.request import GenerationRequest

        try:
            return self.engine.batch_key(GenerationRequest.from_params(job.params))
        except Exception:  # noqa: BLE001 - it will fail clearly when prepared
            return None

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

    def _running_left_s(self) -> float:
        """Seconds of work already taken off the queue: the GPU batch and the prepared one."""
        left = 0.0
        if self._gpu_batch_cost:
            elapsed = time.monotonic() - self._gpu_started
            left = max(0.0, self.cost_model.seconds(self._gpu_batch_cost) - elapsed)
        for work in self._active.values():
            if work.stage == "picked":
                left += self.cost_model.seconds(work.entry.cost)
        return left

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


def _images_made(works: list[_Work]) -> int:
    return sum(len(w.result.images) for w in works if w.result is not None)


def _detached(exc: BaseException) -> BaseException:
    """The exception to keep on a job: an expected one (OOM, cancel, bad input) without its
    traceback and chain, whose frames would keep a failed batch's tensors alive on the GPU;
    anything else is logged here with its traceback first."""
    if not isinstance(exc, (OutOfMemory, JobCancelled, UserInputError)):
        log.error("generation failed", exc_info=exc)
    exc.__context__ = exc.__cause__ = None
    return exc.with_traceback(None)


def _count(entry: Entry) -> int:
    return int(entry.payload.params.get("count") or 1)
