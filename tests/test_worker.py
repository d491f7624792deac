"""The worker on the real ``tiny`` engine and a real SQLite store.

Jobs use the tiny model's defaults (64 px, 4 steps, one image) so a generation is well under a
second on an idle CPU; what is asserted is behaviour (order, statuses, files, exactly-once), and
the one timing check compares two figures measured in the same run.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from core.config import Settings
from core.errors import OutOfMemory, UserInputError
from core.jobs import Job, JobBlocked, JobStatus
from core.store import Store
from generation.request import GenerationRequest
from generation.worker import Worker, save_pngs


def settings_for(base: Settings, tmp_path: Path, **queue: Any) -> Settings:
    return base.model_copy(
        update={"data_dir": tmp_path, "queue": base.queue.model_copy(update=queue)}
    )


def req(prompt: str = "a lighthouse", **kw: Any) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, count=kw.pop("count", 1), **kw)


def upscale_request(engine: Any, size: tuple[int, int]) -> tuple[Any, GenerationRequest]:
    """A parent request and the upscale of a flat image of ``size`` made from it."""
    from PIL import Image

    parent = engine.validate(req("a red square", width=64, height=64))
    source = Image.new("RGB", size, (200, 80, 40))
    return parent, parent.replace(init_image=source, kind="upscale", count=1, seed=None)


class Recorder:
    """A listener that remembers every call and claims delivery like the bot does."""

    def __init__(self, store: Store, *, deliver: bool = True, skip: set[str] | None = None):
        self.store = store
        self.deliver = deliver
        self.skip = skip or set()
        self.events: list[tuple[str, str]] = []
        self.reasons: dict[str, str] = {}
        self.delivered: Counter[str] = Counter()
        self.progress: dict[str, list[int]] = {}
        self.off_loop_calls = 0
        self.started = asyncio.Event()
        self.hooks: dict[str, Any] = {}

    def _check_thread(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            self.off_loop_calls += 1

    def order(self, name: str) -> list[str]:
        return [job_id for event, job_id in self.events if event == name]

    async def on_queued(self, job: Job, estimate: Any) -> None:
        self._check_thread()
        self.events.append(("queued", job.id))

    async def on_started(self, job: Job) -> None:
        self._check_thread()
        self.events.append(("started", job.id))
        self.started.set()
        if "started" in self.hooks:
            await self.hooks["started"](job)

    async def on_progress(self, job: Job, event: Any) -> None:
        self._check_thread()
        self.progress.setdefault(job.id, []).append(event.step)
        if "progress" in self.hooks:
            await self.hooks["progress"](job, event)

    async def _claim(self, job: Job) -> None:
        if self.deliver and job.id not in self.skip and await self.store.mark_delivered(job.id):
            self.delivered[job.id] += 1

    async def on_done(self, job: Job, images: list) -> None:
        self._check_thread()
        self.events.append(("done", job.id))
        assert images and all(Path(i.path).is_file() for i in images)  # on disk before delivery
        await self._claim(job)

    async def on_failed(self, job: Job, reason: str) -> None:
        self._check_thread()
        self.events.append(("failed", job.id))
        self.reasons[job.id] = reason
        await self._claim(job)


@pytest.fixture
async def store(tmp_path: Path):
    s = await Store.open(tmp_path / "imagine.db")
    yield s
    await s.close()


async def test_jobs_run_in_fair_order_and_are_recorded(tiny_engine, tiny_settings, tmp_path, store):
    settings = settings_for(tiny_settings, tmp_path, cobatch=False)
    rec = Recorder(store)
    worker = Worker(store, tiny_engine, settings, listener=rec)
    heavy = [await worker.submit(req(f"heavy {i}"), user_id=1, guild_id=5) for i in range(3)]
    light = await worker.submit(req("light", count=2), user_id=2, guild_id=5)
    assert worker.estimate(light.id).position == 2  # fair: right after the heavy user's first
    await worker.start()
    await worker.join()
    await worker.stop()

    assert rec.order("started") == [heavy[0].id, light.id, heavy[1].id, heavy[2].id]
    for job in [*heavy, light]:
        row = await store.get_job(job.id)
        assert row.status == JobStatus.DONE and row.measured_seconds > 0
        images = await store.images_for_job(job.id)
        assert len(images) == row.params["count"]
        assert [i.seed for i in images] == [row.params["seed"] + k for k in range(len(images))]
        assert all(Path(i.path).parent == settings.images_dir / job.id for i in images)
    assert (await store.get_job(light.id)).grid_path.endswith("grid.png")
    assert rec.delivered == {j.id: 1 for j in [*heavy, light]}
    assert rec.off_loop_calls == 0  # every listener call came back to the event loop


async def test_compatible_jobs_of_different_users_share_one_batch(
    tiny_engine, tiny_settings, tmp_path, store
):
    # One post-processing thread: a full batch must still find room to hand its results over.
    settings = settings_for(tiny_settings, tmp_path, postprocess_threads=1)
    rec = Recorder(store)
    worker = Worker(store, tiny_engine, settings, listener=rec)
    jobs = [await worker.submit(req(f"cat {u}"), user_id=u) for u in (1, 2, 3, 4)]
    await worker.start()
    await asyncio.wait_for(worker.join(), timeout=300)  # a self-wait would hang here
    await worker.stop()
    assert len(worker.gpu_intervals) == 1  # one denoising call for all four
    rows = [await store.get_job(j.id) for j in jobs]
    assert all(r.status == JobStatus.DONE for r in rows)
    start, end = worker.gpu_intervals[0]
    # Each job is charged its share of the batch.
    assert sum(r.measured_seconds for r in rows) == pytest.approx(end - start, rel=0.05)


async def test_a_batch_s_gpu_energy_is_split_across_its_jobs_by_cost(
    tiny_engine, tiny_settings, tmp_path, store
):
    # NVML cannot run here: a counter that advances 12 J between the reads around the batch.
    from core import metrics

    readings = iter([5_000_000, 5_012_000])
    worker = Worker(store, tiny_engine, settings_for(tiny_settings, tmp_path))
    worker.energy = metrics.GpuEnergy(counter_mj=lambda: next(readings))
    small = await worker.submit(req("one cat"), user_id=1)
    large = await worker.submit(req("three cats", count=3), user_id=2)
    await worker.start()
    await worker.join()
    await worker.stop()
    assert len(worker.gpu_intervals) == 1  # one batch for both
    rows = [await store.get_job(small.id), await store.get_job(large.id)]
    assert [r.energy_joules for r in rows] == [pytest.approx(3.0), pytest.approx(9.0)]


async def test_without_an_energy_counter_a_job_records_none(
    tiny_engine, tiny_settings, tmp_path, store
):
    worker = Worker(store, tiny_engine, settings_for(tiny_settings, tmp_path))
    assert worker.energy.read_mj() is None  # no NVIDIA GPU here
    job = await worker.submit(req("a cat"), user_id=1)
    await worker.start()
    await worker.join()
    await worker.stop()
    row = await store.get_job(job.id)
    assert row.status == JobStatus.DONE and row.energy_joules is None


async def test_invalid_request_never_enters_the_queue(tiny_engine, tiny_settings, tmp_path, store):
    worker = Worker(store, tiny_engine, settings_for(tiny_settings, tmp_path))
    with pytest.raises(UserInputError, match="steps is 10000; allowed range is 1 to"):
        await worker.submit(req(steps=10_000), user_id=1)
    with pytest.raises(UserInputError, match="prompt is empty"):
        await worker.submit(req("   "), user_id=1)
    assert await store.queued_jobs() == [] and len(worker.scheduler) == 0


async def test_user_over_the_cap_is_told_how_many_are_queued(
    tiny_engine, tiny_settings, tmp_path, store
):
    worker = Worker(store, tiny_engine, settings_for(tiny_settings, tmp_path, max_queued_per_user=2))
    await worker.submit(req(), user_id=1)
    await worker.submit(req(), user_id=1)
    with pytest.raises(UserInputError, match="you already have 2 jobs queued"):
        await worker.submit(req(), user_id=1)
    await worker.submit(req(), user_id=2)
    assert len(await store.queued_jobs()) == 3


async def test_cancel_queued_and_running_jobs(tiny_engine, tiny_settings, tmp_path, store):
    settings = settings_for(tiny_settings, tmp_path, cobatch=False)
    rec = Recorder(store)
    worker = Worker(store, tiny_engine, settings, listener=rec)
    running = await worker.submit(req("long", steps=40), user_id=1)
    other = await worker.submit(req("other"), user_id=2)
    queued = await worker.submit(req("never"), user_id=3)
    with pytest.raises(UserInputError, match="not yours"):
        await worker.cancel(queued.id, user_id=99)
    assert await worker.cancel(queued.id, user_id=3)

    async def cancel_once_running(job: Job, event: Any) -> None:
        if job.id == running.id and event.step == 1:  # the first step is always reported
            assert await worker.cancel(job.id)

    rec.hooks["progress"] = cancel_once_running
    await worker.start()
    await worker.join()
    await worker.stop()

    assert (await store.get_job(queued.id)).status == JobStatus.CANCELLED
    assert queued.id not in rec.order("started")
    row = await store.get_job(running.id)
    assert row.status == JobStatus.CANCELLED and await store.images_for_job(running.id) == []
    assert max(rec.progress[running.id]) < 40  # stopped at a step, not run to the end
    assert (await store.get_job(other.id)).status == JobStatus.DONE  # the worker carried on
    assert not await worker.cancel(other.id)  # finished jobs cannot be cancelled


class FlakyEngine:
    """The real engine, except prompts containing "oom" run out of memory (cannot happen on CPU)."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.calls: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def generate(self, reqs, **kw):
        self.calls.append(len(reqs))
        if any("oom" in r.prompt for r in reqs):
            raise OutOfMemory("CUDA out of memory (simulated)")
        return self._engine.generate(reqs, **kw)


async def test_failures_are_recorded_and_the_worker_carries_on(
    tiny_engine, tiny_settings, tmp_path, store
):
    settings = settings_for(tiny_settings, tmp_path)
    default = save_pngs(settings.images_dir)

    def postprocess(job: Job, result: Any):
        if "nsfw" in job.params["prompt"]:
            raise JobBlocked("image blocked: it looks like nudity")
        if "crash" in job.params["prompt"]:
            raise RuntimeError("disk on fire")
        return default(job, result)

    engine = FlakyEngine(tiny_engine)
    rec = Recorder(store)
    worker = Worker(store, engine, settings, postprocess=postprocess, listener=rec)
    prompts = ["fine one", "nsfw", "oom", "crash", "fine two"]
    jobs = {p: await worker.submit(req(p), user_id=i) for i, p in enumerate(prompts)}
    await worker.start()
    await worker.join()
    await worker.stop()

    rows = {p: await store.get_job(j.id) for p, j in jobs.items()}
    assert {p: r.status for p, r in rows.items()} == {
        "fine one": JobStatus.DONE,
        "nsfw": JobStatus.BLOCKED,
        "oom": JobStatus.FAILED,
        "crash": JobStatus.FAILED,
        "fine two": JobStatus.DONE,
    }
    assert rows["nsfw"].error == "image blocked: it looks like nudity"
    assert "ran out of memory" in rows["oom"].error
    assert "post-processing failed: disk on fire" == rows["crash"].error
    assert rec.reasons[jobs["oom"].id] == rows["oom"].error
    # The batch that held the OOM job was retried job by job, so its neighbours still ran.
    assert 4 in engine.calls and engine.calls.count(1) >= 4
    assert set(rec.delivered) == {j.id for j in jobs.values()}


async def test_restart_completes_every_accepted_job_exactly_once(
    tiny_engine, tiny_settings, tmp_path
):
    settings = settings_for(tiny_settings, tmp_path, cobatch=False)
    path = settings.db_path
    store = await Store.open(path)
    jobs = []
    first = Recorder(store)
    worker = Worker(store, tiny_engine, settings, listener=first)
    for user in range(5):
        jobs.append(await worker.submit(req(f"job {user}", steps=8), user_id=user))
    first.skip = {jobs[0].id}  # the process dies before the first result is delivered
    second_running = asyncio.Event()

    async def on_progress(job: Job, event: Any) -> None:
        if job.id == jobs[1].id:
            second_running.set()

    first.hooks["progress"] = on_progress
    await worker.start()
    await second_running.wait()
    await worker.stop(finish_running=False)  # interrupt job 1 mid-generation
    # And a hard crash leaves a job marked running.
    await store.db.execute("UPDATE jobs SET status = 'running' WHERE id = ?", (jobs[3].id,))
    await store.db.commit()
    await store.close()

    store = await Store.open(path)
    second = Recorder(store)
    worker = Worker(store, tiny_engine, settings, listener=second)
    recovery = await worker.start()
    assert recovery.requeued == 1
    assert [j.id for j in recovery.undelivered] == [jobs[0].id]
    await worker.join()
    await worker.stop()

    for job in jobs:
        row = await store.get_job(job.id)
        assert row.status == JobStatus.DONE and row.delivered_at is not None
        assert len(await store.images_for_job(job.id)) == 1
        assert first.delivered[job.id] + second.delivered[job.id] == 1
    assert second.delivered[jobs[0].id] == 1  # re-offered after the restart
    assert (await store.get_job(jobs[1].id)).attempts == 2  # interrupted, then re-run
    await store.close()


async def test_graceful_stop_finishes_the_running_job_and_keeps_the_rest(
    tiny_engine, tiny_settings, tmp_path, store
):
    settings = settings_for(tiny_settings, tmp_path, cobatch=False)
    rec = Recorder(store)
    worker = Worker(store, tiny_engine, settings, listener=rec)
    jobs = [await worker.submit(req(f"j{u}"), user_id=u) for u in range(3)]
    await worker.start()
    await rec.started.wait()
    await worker.stop()
    statuses = [(await store.get_job(j.id)).status for j in jobs]
    assert statuses[0] == JobStatus.DONE and rec.delivered[jobs[0].id] == 1
    assert statuses[1:] == [JobStatus.QUEUED, JobStatus.QUEUED]
    with pytest.raises(UserInputError, match="restarting"):
        await worker.submit(req(), user_id=9)


async def test_event_loop_keeps_ticking_while_the_gpu_works(
    tiny_engine, tiny_settings, tmp_path, store
):
    settings = settings_for(tiny_settings, tmp_path)
    rec = Recorder(store)
    worker = Worker(store, tiny_engine, settings, listener=rec)
    ticks: list[float] = []

    async def heartbeat() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.01)

    beat = asyncio.create_task(heartbeat())
    job = await worker.submit(req("steady", steps=16), user_id=1)
    await worker.start()
    await worker.join()
    beat.cancel()
    await worker.stop()

    (start, end), = worker.gpu_intervals
    during = [t for t in ticks if start <= t <= end]
    gaps = [b - a for a, b in zip(during, during[1:], strict=False)]
    assert len(gaps) >= 3, "the loop never ticked while the job ran"
    # A blocked loop would show one gap as long as the generation; a healthy one ticks on.
    assert max(gaps) < (end - start) / 3
    # Progress is throttled at the source (PROGRESS_INTERVAL_S), keeping the first and last step.
    steps = rec.progress[job.id]
    assert steps[0] == 1 and steps[-1] == 16 and steps == sorted(set(steps))
    assert rec.off_loop_calls == 0


async def test_variation_and_upscale_jobs_run_from_their_stored_init_image(
    tiny_engine, tiny_settings, tmp_path, store
):
    settings = settings_for(tiny_settings, tmp_path)
    rec = Recorder(store)
    worker = Worker(store, tiny_engine, settings, listener=rec)
    parent, upscale = upscale_request(tiny_engine, (64, 64))
    source = upscale.init_image
    vary = tiny_engine.variation_request(parent, source, strong=True)
    jobs = [
        await worker.submit(vary, user_id=1),
        await worker.submit(upscale, user_id=2),
    ]
    # The init image was saved with the job, so the request survives a restart.
    assert all(Path(j.params["init_image"]).is_file() for j in jobs)
    await worker.start()
    await worker.join()
    await worker.stop()
    sizes = []
    for job in jobs:
        row = await store.get_job(job.id)
        assert row.status == JobStatus.DONE, row.error
        (image,) = await store.images_for_job(job.id)
        sizes.append((image.width, image.height))
    assert [j.kind.value for j in jobs] == ["variation", "upscale"]
    assert sizes == [(64, 64), (128, 128)]


async def test_cancelling_the_job_prepared_next_skips_it(tiny_engine, tiny_settings, tmp_path, store):
    settings = settings_for(tiny_settings, tmp_path, cobatch=False)
    rec = Recorder(store)
    worker = Worker(store, tiny_engine, settings, listener=rec)
    first = await worker.submit(req("first", steps=12), user_id=1)
    second = await worker.submit(req("second"), user_id=2)
    outcome: list[bool] = []
    asked: list[bool] = []  # set before awaiting: the next step's event may run meanwhile

    async def cancel_second(job: Job, event: Any) -> None:
        if job.id == first.id and not asked:
            asked.append(True)
            # By now the feeder has picked (and usually prepared) the second job.
            outcome.append(await worker.cancel(second.id, user_id=2))

    rec.hooks["progress"] = cancel_second
    await worker.start()
    await worker.join()
    await worker.stop()
    assert outcome == [True]
    assert (await store.get_job(first.id)).status == JobStatus.DONE
    assert (await store.get_job(second.id)).status == JobStatus.CANCELLED
    assert second.id not in rec.order("started")
    assert rec.reasons[second.id] == "cancelled"


async def test_out_of_memory_in_a_cobatch_frees_its_tensors_before_the_retry(
    tiny_engine, tiny_settings, tmp_path, store
):
    import weakref

    import torch

    settings = settings_for(tiny_settings, tmp_path)
    seen: list[weakref.ref] = []
    alive_at_retry: list[bool] = []

    def oom_once(_module: Any, args: tuple) -> None:
        if not seen:  # the co-batch's first step: remember its latents, then fail like CUDA
            seen.append(weakref.ref(args[0]))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        alive_at_retry.append(seen[0]() is not None)

    rec = Recorder(store)
    worker = Worker(store, tiny_engine, settings, listener=rec)
    jobs = [await worker.submit(req(f"a lighthouse {i}"), user_id=i) for i in range(2)]
    handle = tiny_engine.txt2img.unet.register_forward_pre_hook(oom_once)
    try:
        await worker.start()
        await worker.join()
        await worker.stop()
    finally:
        handle.remove()
    # The failed batch's latents were gone before the one-by-one retry allocated anything.
    assert alive_at_retry and not any(alive_at_retry)
    assert [(await store.get_job(j.id)).status for j in jobs] == [JobStatus.DONE] * 2


async def test_upscale_job_reports_progress_and_stops_on_cancel(
    tiny_engine, tiny_settings, tmp_path, store
):
    rec = Recorder(store)
    worker = Worker(store, tiny_engine, settings_for(tiny_settings, tmp_path), listener=rec)
    # 96x64 -> 192x128: six 64 px tiles (88x80 with the overlap), run as batches of 4 and 2.
    _, upscale = upscale_request(tiny_engine, (96, 64))
    done = await worker.submit(upscale, user_id=1)
    cancelled = await worker.submit(upscale, user_id=2)

    async def cancel_at_first_step(job: Job, event: Any) -> None:
        if job.id == cancelled.id and event.step == 1:
            await worker.cancel(cancelled.id, user_id=2)

    rec.hooks["progress"] = cancel_at_first_step
    await worker.start()
    await worker.join()
    await worker.stop()
    assert (await store.get_job(done.id)).status == JobStatus.DONE
    assert rec.progress[done.id] == [1, 2]  # one step per batch of tiles, over the whole job
    assert (await store.get_job(cancelled.id)).status == JobStatus.CANCELLED
    assert rec.progress[cancelled.id] == [1]  # stopped before the second batch of tiles


async def test_an_upscale_is_charged_by_the_size_of_the_image_it_gets(
    tiny_engine, tiny_settings, tmp_path, store
):
    from PIL import Image

    worker = Worker(store, tiny_engine, settings_for(tiny_settings, tmp_path))
    parent = tiny_engine.validate(req("a red square", width=64, height=64))
    costs = []
    for side in (64, 128):  # an upscale, then an upscale of that upscale
        image = Image.new("RGB", (side, side), (200, 80, 40))
        upscale = parent.replace(init_image=image, kind="upscale", count=1, seed=None)
        costs.append((await worker.submit(upscale, user_id=side)).est_cost)
    assert costs[1] == pytest.approx(4 * costs[0])


def test_gpu_history_is_bounded(tiny_engine, tiny_settings, tmp_path, store):
    from generation.worker import GPU_INTERVALS_KEPT

    worker = Worker(store, tiny_engine, settings_for(tiny_settings, tmp_path))
    for i in range(GPU_INTERVALS_KEPT + 10):
        worker.gpu_intervals.append((i, i + 0.5))
    assert len(worker.gpu_intervals) == GPU_INTERVALS_KEPT
    assert worker.gpu_intervals[-1] == (GPU_INTERVALS_KEPT + 9, GPU_INTERVALS_KEPT + 9.5)
