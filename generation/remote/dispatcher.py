"""The bot's side of scale-out: the fair-share queue hands jobs to remote GPU workers.

Why the bot keeps the queue: fairness is global, so it is decided in one place (the same
``Scheduler`` as in single-process mode), and the stream only ever holds as many jobs as the
workers have free slots. A job leaves the scheduler when a slot is free, is marked ``running``
in the store and added to the jobs stream together with its ``inflight`` mark (one MULTI). The
worker's result comes back on the results stream; the bot rebuilds the images, runs the usual
post-processing (moderation, watermark, provenance: the instance keys stay here), records the
job once (``mark_done`` only while it is ``running``), lets the listener deliver it (claimed
once by ``mark_delivered``) and only then acknowledges the result.

``RemoteWorker`` has ``Worker``'s interface (submit, cancel, estimates, start, stop, join), so
the bot does not know where the GPU is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any

from core import metrics
from core.config import Settings
from core.jobs import Job, JobStatus
from core.store import Recovery, Store
from generation.remote import protocol
from generation.remote.protocol import Keys
from generation.remote.results import ResultStream, decode_result, remember
from generation.remote.roster import WorkerRoster
from generation.worker import COST_MODEL_KEY, JobListener, Postprocess, Worker, _Work

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 0.5  # how often the bot re-reads the workers' advertisements


class RemoteWorker(Worker):
    """``Worker`` whose GPU stage is a pool of ``imagine-bot worker`` processes (Redis Streams)."""

    def __init__(
        self,
        store: Store,
        engine: Any,
        settings: Settings,
        *,
        postprocess: Postprocess | None = None,
        listener: JobListener | None = None,
        redis: Any = None,
        keys: Keys = protocol.DEFAULT_KEYS,
    ) -> None:
        super().__init__(store, engine, settings, postprocess=postprocess, listener=listener)
        self.redis = redis if redis is not None else protocol.redis_client(settings.queue.redis_url)
        self.keys = keys
        self.model: str = engine.name
        self.jobs_key = keys.jobs(self.model)
        self.roster = WorkerRoster(self.redis, keys, self.model)
        self.results = ResultStream(self.redis, keys)
        self.inflight: dict[str, _Work] = {}  # dispatched, result not recorded yet
        # Worker idle gap before each batch it started: "worker free -> next job running".
        self.dispatch_gaps_ms: deque[float] = deque(maxlen=100_000)
        # Which worker started / finished each recent job (operators' "which GPU made this").
        self.started_on: OrderedDict[str, str] = OrderedDict()
        self.finished_by: OrderedDict[str, str] = OrderedDict()
        self._recording_ids: set[str] = set()
        self._recording_entries: set[Any] = set()
        self._result_tasks: set[asyncio.Task[Any]] = set()

    @property
    def workers(self) -> dict[str, dict[str, Any]]:
        """Live workers' advertisements (those of this bot's model)."""
        return self.roster.workers

    @property
    def capacity(self) -> int:
        """Free + busy slots of the live workers: how many jobs may be out at once."""
        return self.roster.capacity

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> Recovery:
        """Recover: jobs still out on workers stay running, the rest goes back to the queue."""
        self._loop = asyncio.get_running_loop()
        metrics.watch_worker(self)
        saved = await self.store.get_value(COST_MODEL_KEY)
        if saved:
            with contextlib.suppress(ValueError):
                self.cost_model.seconds_per_unit = max(float(saved), 1e-9)
        await protocol.ensure_group(self.redis, self.jobs_key, protocol.WORKERS_GROUP)
        await protocol.ensure_group(self.redis, self.keys.results, protocol.BOT_GROUP)
        rows = await self.store.db.execute_fetchall("SELECT id FROM jobs WHERE status='running'")
        running = {row[0] for row in rows}
        marked = {k.decode(): v for k, v in (await self.redis.hgetall(self.keys.inflight)).items()}
        recovery = await self.store.recover()  # every running job is queued again ...
        out = running & set(marked)
        for job in recovery.queued:
            if job.id in out:  # ... except those a worker still has: running once more
                await self.store.mark_running(job.id)
                work = self._track(self._entry(job, None))
                work.stage = "dispatched"
                self.inflight[job.id] = work
            elif job.id not in self.scheduler:
                self.scheduler.push(self._entry(job, None))
        if stale := set(marked) - out:
            await self.redis.hdel(self.keys.inflight, *stale)
        log.info(
            "remote queue: %d jobs queued, %d still on workers",
            len(self.scheduler),
            len(self.inflight),
        )
        for job in recovery.undelivered:
            if job.status == JobStatus.DONE:
                self._notify("on_done", job, await self.store.images_for_job(job.id))
            else:
                self._notify("on_failed", job, job.error or job.status.value)
        self._tasks = [
            asyncio.create_task(self._watch_workers(), name="imagine-remote-watch"),
            asyncio.create_task(self._dispatch(), name="imagine-remote-dispatch"),
            asyncio.create_task(self.results.read(self._handle), name="imagine-remote-results"),
        ]
        self._wake.set()
        return recovery

    async def stop(self, *, finish_running: bool = True) -> None:
        """Stop dispatching; jobs out on workers stay there and are recorded after the restart."""
        self._stopping = True
        await protocol.cancel_and_wait(self._tasks)
        self._tasks = []
        await self._requeue([w for w in list(self._active.values()) if w.stage == "picked"])
        for tasks in (self._result_tasks, self._post_tasks, self._listener_tasks):
            while tasks:
                await asyncio.gather(*list(tasks), return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.store.set_value(COST_MODEL_KEY, repr(self.cost_model.seconds_per_unit))
        for pool in (self._gpu, self._prep, self._post):
            pool.shutdown(wait=True)
        metrics.worker_stopped()
        with contextlib.suppress(Exception):
            await self.redis.aclose()

    # --- workers -------------------------------------------------------------------------------

    async def _watch_workers(self) -> None:
        rounds = 0
        while True:
            try:
                await self._read_workers()
                rounds += 1
                if rounds % 10 == 0:
                    await self._reconcile()
                    await self.results.reread(self._handle)
                if rounds % 7200 == 1:  # hourly
                    await self.roster.forget_gone_consumers()
            except Exception as exc:  # noqa: BLE001 - Redis restarting: keep the last picture
                log.warning("remote queue: cannot read the workers (%s)", exc)
            await asyncio.sleep(WATCH_INTERVAL_S)

    async def _read_workers(self) -> None:
        if await self.roster.read():
            self._wake.set()

    async def _reconcile(self) -> None:
        """A job out on a worker whose inflight mark is gone was lost by Redis (a crash with
        ``appendfsync everysec``): it goes back to the queue."""
        before = list(self.inflight)
        marked = {k.decode() for k in await self.redis.hkeys(self.keys.inflight)}
        for job_id in before:
            work = self.inflight.get(job_id)
            if job_id in marked or work is None or job_id in self._recording_ids:
                continue
            if await self.store.requeue(job_id):
                log.warning("job %s: lost by Redis; queued again", job_id)
                self.inflight.pop(job_id, None)
                self._generating.pop(job_id, None)
                self._done(work)
                self.scheduler.push(work.entry)
                self._wake.set()

    # --- dispatching ---------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while True:
            while len(self.inflight) >= self.capacity or (entry := self.scheduler.pick()) is None:
                self._wake.clear()
                await self._wake.wait()
            work = self._track(entry)
            try:
                await self._send(work)
            except Exception as exc:  # noqa: BLE001 - Redis unreachable: back to the queue
                log.warning("job %s: cannot hand it to a worker (%s); retrying", entry.job_id, exc)
                if work.stage == "picked":
                    await self._requeue([work])
                    self.scheduler.push(work.entry)
                await asyncio.sleep(1.0)

    async def _send(self, work: _Work) -> None:
        job = work.job
        if work.cancelled or not await self.store.mark_running(job.id):
            await self._finish_cancelled(work)
            return
        await add_job(self.redis, self.jobs_key, self.keys.inflight, job)
        work.stage = "dispatched"
        self.inflight[job.id] = work

    # --- results -------------------------------------------------------------------------------

    async def _handle(self, entries: list[tuple[Any, dict[bytes, bytes] | None]]) -> None:
        for eid, fields in entries:
            if not fields or eid in self._recording_entries:
                continue
            if protocol.text(fields, "type") == "started":
                self._started_remote(fields)
                await self.results.ack(eid, fields, clear=False)
            else:
                # The worker's slot is free from now on, not once the bot has recorded this.
                if self.inflight.pop(protocol.text(fields, "job") or "", None) is not None:
                    self._wake.set()
                task = asyncio.create_task(self._record(eid, fields))
                self._result_tasks.add(task)
                task.add_done_callback(self._result_tasks.discard)

    def _started_remote(self, fields: dict[bytes, bytes]) -> None:
        gap = float(protocol.text(fields, "idle_ms") or -1)
        if gap >= 0:
            self.dispatch_gaps_ms.append(gap)
        job_id = protocol.text(fields, "job") or ""
        remember(self.started_on, job_id, protocol.text(fields, "worker") or "")
        work = self._active.get(job_id)
        if work is not None and work.stage == "dispatched":
            work.stage = "generating"
            work.job.status, work.job.started_at = JobStatus.RUNNING, time.time()
            self._generating[work.job.id] = work
            self._notify("on_started", work.job)

    async def _record(self, eid: Any, fields: dict[bytes, bytes]) -> None:
        """Store and deliver one worker result, once per job whatever arrives twice."""
        job_id = protocol.text(fields, "job") or ""
        if job_id in self._recording_ids:
            return  # another result of this job is being recorded; this one is re-read later
        self._recording_ids.add(job_id)
        self._recording_entries.add(eid)
        try:
            job = await self.store.get_job(job_id)
            if job is None or job.status != JobStatus.RUNNING:
                log.info(
                    "job %s: result from %s ignored (already %s)",
                    job_id,
                    protocol.text(fields, "worker"),
                    job.status.value if job else "gone",
                )
            else:
                remember(self.finished_by, job_id, protocol.text(fields, "worker") or "")
                await self._finish(job, fields)
            await self.results.ack(eid, fields)
        except Exception:  # noqa: BLE001 - left pending: recorded again after a restart
            log.exception("job %s: recording its result failed", job_id)
        finally:
            self._recording_ids.discard(job_id)
            self._recording_entries.discard(eid)
            self._generating.pop(job_id, None)
            if self.inflight.pop(job_id, None) is not None:
                self._wake.set()

    async def _finish(self, job: Job, fields: dict[bytes, bytes]) -> None:
        work = self._active.get(job.id)
        if work is None:  # recovered after a restart
            work = self._track(self._entry(job, None))
        if work.cancelled:
            await self._finish_cancelled(work)
            return
        if protocol.text(fields, "type") != "done":
            reason = protocol.text(fields, "reason") or "the GPU worker failed"
            await self._finish_failed(work, reason, JobStatus.FAILED)
            return
        work.seconds = float(protocol.text(fields, "seconds") or 0.0)
        work.result = await self._run_in(self._post, decode_result, job, fields)
        work.stage = "post"
        if work.seconds > 0:  # N workers drain the queue N times faster: ETAs follow
            self.cost_model.observe(work.entry.cost, work.seconds / max(1, len(self.workers)))
        await self._postprocess(work)


async def add_job(redis: Any, jobs_key: str, inflight_key: str, job: Job) -> None:
    """One MULTI: the job's entry on its model's stream and its inflight mark, whose token
    lets only this dispatch's result clear the mark (``ACK_RESULT``)."""
    token = secrets.token_hex(8)
    fields: dict[str, Any] = {
        "job": job.id,
        "kind": job.kind.value,
        "params": json.dumps(job.params),
        "token": token,
        "dispatched": time.time(),
    }
    if path := job.params.get("init_image"):
        fields["init"] = await asyncio.to_thread(Path(path).read_bytes)
    for k, ref in enumerate(job.params.get("references") or []):  # /blend's images
        fields[f"ref{k}"] = await asyncio.to_thread(Path(ref).read_bytes)
    pipe = redis.pipeline(transaction=True)
    pipe.xadd(jobs_key, fields)
    pipe.hset(inflight_key, job.id, token)
    await pipe.execute()
