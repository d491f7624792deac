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

``Worker`` owns the state and the public API; each stage's steps live in a mixin of their own,
so each can be read without the others: ``worker_feed`` (stage 1), ``worker_gpu`` (stage 2),
``worker_record`` (stage 3) and ``worker_recovery`` (start-up); ``work`` holds a job's state
between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from core import metrics
from core.config import Settings
from core.errors import UserInputError
from core.jobs import (
    ImageRecord,
    Job,
    JobKind,
    JobStatus,
    Processed,
    ProcessedImage,
    new_job_id,
)
from core.store import Recovery, Store
from generation.admission import Admission, Reservation
from generation.eta import CostModel, Estimate, EtaEstimator
from generation.scheduler import Scheduler
from generation.work import COST_MODEL_KEY, Batch, Work
from generation.worker_feed import UPSCALE_COST_FACTOR, Feeder
from generation.worker_gpu import (
    PROGRESS_INTERVAL_S,
    DeviceTask,
    GpuLoop,
    leave_a_core_for_the_pipeline,
)
from generation.worker_record import Recorder
from generation.worker_recovery import Recovering

if TYPE_CHECKING:
    from generation.engine import Engine, GenerationResult, ProgressEvent
    from generation.request import GenerationRequest

GPU_INTERVALS_KEPT = 10_000
# Names other modules import from here (the remote dispatcher, bench, tests).
_Work = Work
__all__ = [
    "COST_MODEL_KEY", "GPU_INTERVALS_KEPT", "PROGRESS_INTERVAL_S", "UPSCALE_COST_FACTOR",
    "JobListener", "NullListener", "Postprocess", "Worker", "leave_a_core_for_the_pipeline",
    "save_pngs",
]


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



class Worker(Feeder, GpuLoop, Recorder, Recovering):
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
        self._ready: queue.SimpleQueue[Batch | DeviceTask | None] = queue.SimpleQueue()
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
        self._active: dict[str, Work] = {}  # picked, not yet finished (prepared/generating/post)
        self._generating: dict[str, Work] = {}
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
        recovery = await self._recover()
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
                    item = self._ready.get_nowait()
                    if isinstance(item, DeviceTask):
                        item.cancel()
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

    async def run_between_jobs(self, fn: Callable[[], Any]) -> Any:
        """Run blocking ``fn`` on the device between two batches and return what it returns.

        Serving, it takes the GPU thread's next turn (``DeviceTask``); stopped, or with the
        GPU stage elsewhere (``RemoteWorker``), nothing else uses this machine's device, so a
        plain thread does. Never blocks the event loop.
        """
        if self._gpu_done is None or self._stopping or self._loop is None:
            return await asyncio.to_thread(fn)
        task = DeviceTask(fn, self._loop)
        self._ready.put(task)
        return await task.future


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

