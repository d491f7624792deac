"""``imagine-bot worker``: one GPU, fed by the bot over Redis Streams.

Why the worker pulls: it reads from the jobs stream only as many entries as it has free slots
(``slots``: the batch on the GPU plus one waiting, so the GPU goes from one job to the next
without a round trip), and the bot adds entries only for free slots, so the fair order decided
by the bot's scheduler is what the GPUs run.

A worker only denoises: images go back as PNG bytes on the results stream and the bot moderates,
watermarks and signs them, so the instance keys never leave the operator's machine and a worker
needs nothing but the model and the Redis URL.

Crash safety: an entry is acknowledged only by ``protocol.FINISH``, which also posts the result,
and only while this worker still owns it. Every ``reclaim_after_s / 3`` the worker re-claims its
own entries (``protocol.HEARTBEAT``) so none of them looks idle, however long the job; an idle
worker takes over entries that nobody refreshed for ``reclaim_after_s`` (``XAUTOCLAIM``): their
worker died.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import socket
import tempfile
import time
from collections import deque
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from redis.exceptions import ResponseError

from core.errors import JobCancelled, OutOfMemory, UserInputError
from generation.remote import protocol
from generation.remote.job_stream import RETRYABLE, JobStream
from generation.remote.protocol import Keys

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Held:
    """A job entry this worker owns: waiting for the GPU, or on it."""

    entry_id: str
    job_id: str
    kind: str
    params: dict[str, Any]
    init_png: bytes | None = None
    reference_pngs: list[bytes] = field(default_factory=list)  # /blend's images
    token: str = ""  # the bot's dispatch token, echoed in results
    request: Any = None  # GenerationRequest, once prepared
    key: Hashable = None  # batch key (None: runs alone)
    count: int = 1
    lost: bool = False  # reclaimed by another worker: do not post a result
    outcome: dict[str, Any] | None = None


class Runner(Protocol):
    """What turns prepared jobs into images (the engine, or a timed stand-in for benchmarks)."""

    model: str
    device: str

    def prepare(self, held: Held, workdir: Path) -> None: ...
    def run(self, batch: list[Held]) -> None: ...
    def free_memory_mb(self) -> int | None: ...


def _png(image: Any) -> bytes:
    buf = io.BytesIO()
    # Fast, lossless: the bot decodes and re-encodes after watermarking anyway.
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _done(images: list[Any], seeds: list[int], width: int, height: int, seconds: float) -> dict:
    return {
        "type": "done",
        "images": [_png(im) for im in images],
        "seeds": list(seeds),
        "width": width,
        "height": height,
        "seconds": seconds,
    }


def _failed(reason: str) -> dict[str, Any]:
    return {"type": "failed", "reason": reason}


class EngineRunner:
    """The real thing: ``generation.engine.Engine`` on this machine's GPU (or CPU)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.model = engine.name
        self.device = str(getattr(engine, "device", "cpu"))
        self._threads_set = False

    def prepare(self, held: Held, workdir: Path) -> None:
        from generation.request import GenerationRequest

        params = dict(held.params)
        if held.init_png is not None:
            path = workdir / f"{held.job_id}.png"
            path.write_bytes(held.init_png)
            params["init_image"] = str(path)
        if held.reference_pngs:
            params["references"] = []
            for k, png in enumerate(held.reference_pngs):
                ref = workdir / f"{held.job_id}_ref{k}.png"
                ref.write_bytes(png)
                params["references"].append(str(ref))
        held.request = GenerationRequest.from_params(params)
        held.count = int(held.request.count or 1)
        if held.kind != "upscale" and held.request.init_image is None and not held.request.references:
            held.key = self.engine.batch_key(held.request)

    def run(self, batch: list[Held]) -> None:
        """GPU thread: leave an outcome on each held job; co-batched when they share a key."""
        if not self._threads_set:
            from generation.worker import leave_a_core_for_the_pipeline

            leave_a_core_for_the_pipeline(self.engine)  # this thread runs torch
            self._threads_set = True
        try:
            self._run(batch)
        except JobCancelled:  # every job of the batch was taken over meanwhile: no outcome
            return
        except OutOfMemory:
            if len(batch) == 1:
                batch[0].outcome = _failed(
                    "the GPU ran out of memory for this job; try fewer images (--n) or a "
                    "smaller size"
                )
            else:  # alone each may fit
                for held in batch:
                    self.run([held])

    def _run(self, batch: list[Held]) -> None:
        started = time.perf_counter()
        try:
            if len(batch) == 1 and batch[0].kind == "upscale":
                req = batch[0].request
                results = [
                    self.engine.upscale(req.init_image, req.replace(init_image=None), seed=req.seed)
                ]
            else:
                results = self.engine.generate(
                    [h.request for h in batch], should_cancel=lambda: all(h.lost for h in batch)
                )
        except (OutOfMemory, JobCancelled):
            raise
        except UserInputError as exc:
            for held in batch:
                held.outcome = _failed(str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - reported on every job of the batch
            log.exception("generation failed")
            for held in batch:
                held.outcome = _failed(f"generation failed: {type(exc).__name__}: {exc}")
            return
        seconds = (time.perf_counter() - started) / len(batch)
        for held, result in zip(batch, results, strict=True):
            held.outcome = _done(result.images, result.seeds, result.width, result.height, seconds)

    def free_memory_mb(self) -> int | None:
        if self.device.startswith("cuda"):
            import torch

            free, _total = torch.cuda.mem_get_info()
            return int(free // 2**20)
        with contextlib.suppress(ValueError, OSError, AttributeError):
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20)
        return None


class SimulatedRunner:
    """A stand-in GPU that sleeps ``seconds`` per batch and returns flat grey images.

    For ``bench/scaleout.py`` on machines with fewer cores than workers: it measures the
    dispatching, not the denoising. Never used by ``imagine-bot run``.
    """

    device = "simulated"

    def __init__(self, seconds: float, model: str) -> None:
        self.seconds = seconds
        self.model = model

    def prepare(self, held: Held, workdir: Path) -> None:
        p = held.params
        held.count = int(p.get("count") or 1)
        held.key = (
            None if held.kind == "upscale" else (p.get("width"), p.get("height"), p.get("steps"))
        )

    def run(self, batch: list[Held]) -> None:
        from PIL import Image

        time.sleep(self.seconds)
        for held in batch:
            p = held.params
            w, h = int(p.get("width") or 64), int(p.get("height") or 64)
            seed = int(p.get("seed") or 0)
            images = [Image.new("RGB", (w, h), (128, 128, 128)) for _ in range(held.count)]
            held.outcome = _done(
                images, [seed + i for i in range(held.count)], w, h, self.seconds / len(batch)
            )

    def free_memory_mb(self) -> int | None:
        return None


@dataclass
class WorkerStats:
    """Advertised with the worker and exported per worker by the bot's metrics."""

    jobs: int = 0
    failed: int = 0
    reclaims: int = 0  # entries taken over from dead workers
    lost: int = 0  # own entries taken over by others (this worker was stalled)
    busy_s: float = 0.0
    started_at: float = field(default_factory=time.time)


class GpuWorker:
    """One worker process's loop: read free-slot-many jobs, run them, post results, repeat."""

    def __init__(
        self,
        redis: Any,
        runner: Runner,
        *,
        name: str | None = None,
        slots: int = 2,
        max_batch: int = 4,
        reclaim_after_s: float = 30.0,
        keys: Keys = protocol.DEFAULT_KEYS,
    ) -> None:
        self.redis = redis
        self.runner = runner
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.slots = max(1, slots)
        self.max_batch = max(1, max_batch)
        self.reclaim_after_s = reclaim_after_s
        self.keys = keys
        self.jobs_key = keys.jobs(runner.model)
        self.stream = JobStream(redis, keys, runner.model, self.name)
        self.stats = WorkerStats()
        self._held: dict[str, Held] = {}
        self._waiting: deque[Held] = deque()
        self._room = asyncio.Event()
        self._work = asyncio.Event()
        self._gpu = ThreadPoolExecutor(1, thread_name_prefix="imagine-gpu")
        self._workdir = Path(tempfile.mkdtemp(prefix="imagine-worker-"))
        self._free_at: float | None = None  # when the GPU last went idle (perf_counter)
        self._running = False

    # --- lifecycle -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; then finish the batch on the GPU, give back the rest."""
        await self.stream.ensure_groups()
        await self._advertise()
        log.info("worker %s serving %s (%d slots)", self.name, self.jobs_key, self.slots)
        reader = asyncio.create_task(self._read(), name="imagine-worker-read")
        gpu = asyncio.create_task(self._serve(), name="imagine-worker-gpu")
        beat = asyncio.create_task(self._beat(), name="imagine-worker-heartbeat")
        stopper = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait(
                {reader, gpu, beat, stopper}, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done - {stopper}:
                task.result()  # a crashed loop stops the worker loudly
        finally:
            stopper.cancel()
            await protocol.cancel_and_wait([reader])
            for held in list(self._waiting):  # not started: back to the stream for others
                await self.stream.release(held.entry_id)
                self._forget(held)
            self._work.set()
            while self._running:  # the batch on the GPU finishes and is posted
                await asyncio.sleep(0.05)
            await protocol.cancel_and_wait([gpu, beat])
            await self.stream.withdraw()
            self._gpu.shutdown(wait=True)

    # --- reading -------------------------------------------------------------------------------

    async def _read(self) -> None:
        # Entries this name already owns (a restart under the same --name) come first.
        await self._take(await self.stream.read_own())
        check_every = max(self.reclaim_after_s / 3, 0.2)
        next_check = 0.0
        while True:
            free = self.slots - len(self._held)
            if free <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            try:
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + check_every
                    if await self._reclaim(free):
                        continue
                block = int(min(check_every, 1.0) * 1000)
                got = await self.stream.read_new(free, block)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await protocol.ensure_group(self.redis, self.jobs_key, protocol.WORKERS_GROUP)
                continue
            except RETRYABLE as exc:  # Redis restarting, or this process was paused
                log.warning("worker %s: Redis unavailable (%s); retrying", self.name, exc)
                await asyncio.sleep(0.5)
                continue
            await self._take(got)

    async def _reclaim(self, free: int) -> bool:
        """Take over entries nobody refreshed for ``reclaim_after_s``: their worker died."""
        claimed = await self.stream.claim_idle(free, int(self.reclaim_after_s * 1000))
        if not claimed:
            return False
        self.stats.reclaims += len(claimed)
        log.warning("worker %s took over %d job(s) of a dead worker", self.name, len(claimed))
        fresh = []
        for eid, fields in claimed:
            times = await self.stream.times_delivered(eid)
            if times > protocol.MAX_DELIVERIES:
                held = _held(eid, fields)
                held.outcome = _failed(
                    f"this job stopped {times - 1} GPU workers (each died while running it); "
                    "it is not retried again"
                )
                self._held[held.entry_id] = held
                await self._post(held)
            else:
                fresh.append((eid, fields))
        await self._take(fresh)
        return True

    async def _take(self, entries: list[tuple[Any, dict[bytes, bytes]]]) -> None:
        loop = asyncio.get_running_loop()
        for eid, fields in entries:
            if not fields:
                continue
            held = _held(eid, fields)
            if held.entry_id in self._held:
                continue
            self._held[held.entry_id] = held
            try:
                await loop.run_in_executor(None, self.runner.prepare, held, self._workdir)
            except UserInputError as exc:
                held.outcome = _failed(str(exc))
                await self._post(held)
                continue
            except Exception as exc:  # noqa: BLE001 - a broken entry must not stop the worker
                log.exception("job %s: cannot prepare it", held.job_id)
                held.outcome = _failed(f"internal error while preparing the job: {exc}")
                await self._post(held)
                continue
            self._waiting.append(held)
            self._work.set()

    # --- the GPU -------------------------------------------------------------------------------

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._waiting:
                self._work.clear()
                await self._work.wait()
            batch = self._pick()
            started = time.perf_counter()
            idle_ms = (started - self._free_at) * 1000 if self._free_at is not None else -1.0
            self._running = True
            try:
                await self.stream.events(
                    "started", [(h.job_id, h.entry_id) for h in batch], idle_ms=round(idle_ms, 3)
                )
                await loop.run_in_executor(self._gpu, self.runner.run, batch)
            finally:
                self._running = False
            self._free_at = time.perf_counter()  # the GPU is free from here on
            self.stats.busy_s += self._free_at - started
            for held in batch:
                if held.outcome is None:  # cancelled: every job of the batch was lost
                    self._forget(held)
                else:
                    await self._post(held)

    def _pick(self) -> list[Held]:
        """The oldest waiting job, plus waiting jobs that can share its denoising call."""
        first = self._waiting.popleft()
        batch, images = [first], first.count
        if first.key is not None:
            for held in list(self._waiting):
                if held.key == first.key and images + held.count <= self.max_batch:
                    self._waiting.remove(held)
                    batch.append(held)
                    images += held.count
        return batch

    async def _post(self, held: Held) -> None:
        """Result and acknowledgement in one step, only if this worker still owns the entry."""
        outcome = held.outcome or _failed("no result")
        fields = result_fields(held, outcome, self.name, self.runner.model)
        if await self.stream.finish(held.entry_id, held.job_id, fields):
            if outcome["type"] == "done":
                self.stats.jobs += 1
            else:
                self.stats.failed += 1
        else:
            if not held.lost:
                self.stats.lost += 1
            log.warning(
                "job %s was taken over by another worker; its result is dropped", held.job_id
            )
        self._forget(held)

    def _forget(self, held: Held) -> None:
        self._held.pop(held.entry_id, None)
        with contextlib.suppress(ValueError):
            self._waiting.remove(held)
        names = [f"{held.job_id}.png"] + [
            f"{held.job_id}_ref{k}.png" for k in range(len(held.reference_pngs))
        ]
        for name in names:
            with contextlib.suppress(OSError):
                (self._workdir / name).unlink(missing_ok=True)
        self._room.set()

    # --- heartbeat and advertisement -----------------------------------------------------------

    async def _beat(self) -> None:
        interval = max(self.reclaim_after_s / 3, 0.1)
        while True:
            await asyncio.sleep(interval)
            try:
                ids = list(self._held)
                if ids:
                    for eid in await self.stream.heartbeat(ids):
                        held = self._held.get(eid)
                        if held is not None and not held.lost:
                            held.lost = True  # a running batch stops at its next step
                            self.stats.lost += 1
                            if held in self._waiting:
                                self._forget(held)
                await self._advertise()
            except Exception as exc:  # noqa: BLE001 - Redis restarting; try again next beat
                log.warning("worker %s: heartbeat failed (%s)", self.name, exc)

    @property
    def held_count(self) -> int:
        """Entries this worker owns: waiting for the GPU, or on it."""
        return len(self._held)

    def advertisement(self) -> dict[str, Any]:
        return advertisement(self)

    async def _advertise(self) -> None:
        ttl = max(1, int(round(self.reclaim_after_s)))
        await self.stream.advertise(self.advertisement(), ttl)


def result_fields(held: Held, outcome: dict[str, Any], worker: str, model: str) -> dict:
    """A result entry's fields, as the bot's ``ResultStream`` and ``decode_result`` read them."""
    fields: dict[str, Any] = {
        "type": outcome["type"],
        "job": held.job_id,
        "entry": held.entry_id,
        "worker": worker,
        "model": model,
        "token": held.token,
    }
    if outcome["type"] == "done":
        images = outcome["images"]
        fields.update(
            seeds=protocol.dumps(outcome["seeds"]),
            width=outcome["width"],
            height=outcome["height"],
            seconds=outcome["seconds"],
            n=len(images),
        )
        fields.update({f"img{i}": data for i, data in enumerate(images)})
    else:
        fields["reason"] = outcome["reason"]
    return fields


def advertisement(worker: GpuWorker) -> dict[str, Any]:
    """What the bot's ``WorkerRoster`` reads: capacity for dispatching, the rest for operators."""
    stats = worker.stats
    uptime = max(time.time() - stats.started_at, 1e-9)
    return {
        "name": worker.name,
        "model": worker.runner.model,
        "device": worker.runner.device,
        "slots": worker.slots,
        "max_batch": worker.max_batch,
        "free_memory_mb": worker.runner.free_memory_mb(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "held": worker.held_count,
        "jobs": stats.jobs,
        "failed": stats.failed,
        "reclaims": stats.reclaims,
        "lost": stats.lost,
        "busy_s": round(stats.busy_s, 3),
        "busy_fraction": round(min(1.0, stats.busy_s / uptime), 4),
        "started_at": stats.started_at,
    }


def _held(eid: Any, fields: dict[bytes, bytes]) -> Held:
    entry_id = eid.decode() if isinstance(eid, bytes) else str(eid)
    return Held(
        entry_id=entry_id,
        job_id=protocol.text(fields, "job") or "",
        kind=protocol.text(fields, "kind") or "imagine",
        params=json.loads(protocol.text(fields, "params") or "{}"),
        init_png=fields.get(b"init"),
        reference_pngs=[
            fields[f"ref{k}".encode()] for k in range(5) if f"ref{k}".encode() in fields
        ],
        token=protocol.text(fields, "token") or "",
    )
