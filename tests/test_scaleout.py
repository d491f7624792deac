"""Scale-out on Redis Streams with a real Redis, real ``imagine-bot worker`` processes on the
``tiny`` model and the real ``RemoteWorker`` on a real SQLite store.

One Redis and two worker processes serve the whole module (a worker loads torch and the tiny
pipeline once: tens of seconds on a busy machine); every test uses its own store, waits for its
own jobs, and leaves both workers running, except the kill -9 test, which comes last.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from core.config import Settings
from core.jobs import Job, JobStatus
from core.store import Store
from generation.request import GenerationRequest
from tests.redis_server import RedisServer, redis_binary, start_worker

pytestmark = pytest.mark.skipif(redis_binary() is None, reason="no redis-server binary")

ROOT = Path(__file__).resolve().parent.parent
RECLAIM_AFTER_S = 4.0
WORKERS = ("gpu-a", "gpu-b")


class Recorder:
    """Listener that claims delivery like the bot does and counts every claim that succeeds."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.delivered: Counter[str] = Counter()
        self.started: list[str] = []
        self.started_event = asyncio.Event()

    async def on_queued(self, job: Job, estimate: Any) -> None:
        pass

    async def on_started(self, job: Job) -> None:
        self.started.append(job.id)
        self.started_event.set()

    async def on_progress(self, job: Job, event: Any) -> None:
        pass

    async def on_done(self, job: Job, images: Any) -> None:
        if await self.store.mark_delivered(job.id):
            self.delivered[job.id] += 1

    async def on_failed(self, job: Job, reason: str) -> None:
        if await self.store.mark_delivered(job.id):
            self.delivered[job.id] += 1


def _start_worker(redis: RedisServer, name: str, cache: Path) -> subprocess.Popen[bytes]:
    env = {
        "IMAGINE_MODEL__NAME": "tiny",
        "IMAGINE_MODEL__DEVICE": "cpu",
        "IMAGINE_MODEL__CACHE_DIR": str(cache),
        "IMAGINE_MODEL__MAX_BATCH": "1",
        "IMAGINE_MODEL__IP_ADAPTER": "tiny",  # /blend's adapter, built in code
        "IMAGINE_QUEUE__RECLAIM_AFTER_S": str(RECLAIM_AFTER_S),
    }
    return start_worker(redis.url, "--name", name, env=env)


def _advertised_one(redis: RedisServer, name: str) -> dict[str, Any] | None:
    import redis as sync_redis

    client = sync_redis.Redis(unix_socket_path=str(redis.socket))
    try:
        value = client.get(f"imagine:worker:{name}")
        return json.loads(value) if value else None
    finally:
        client.close()


def _advertised(redis: RedisServer) -> dict[str, dict[str, Any]]:
    found = {name: _advertised_one(redis, name) for name in WORKERS}
    return {name: ad for name, ad in found.items() if ad is not None}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    """A Redis (AOF, fsync always) and two tiny-model GPU workers."""
    redis = RedisServer().start()
    cache = tmp_path_factory.mktemp("worker-cache")
    procs = {name: _start_worker(redis, name, cache) for name in WORKERS}
    request.getfixturevalue("tiny_engine")  # the bot's engine loads while the workers start
    deadline = time.monotonic() + 240
    while len(_advertised(redis)) < len(WORKERS):
        for name, proc in procs.items():
            assert proc.poll() is None, f"worker {name} exited with {proc.returncode}"
        assert time.monotonic() < deadline, "workers did not come up"
        time.sleep(0.25)
    yield redis, procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
    for proc in procs.values():
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    redis.close()


def _settings(base: Settings, tmp_path: Path, redis: RedisServer) -> Settings:
    queue = base.queue.model_copy(
        update={
            "backend": "redis",
            "redis_url": redis.url,
            "reclaim_after_s": RECLAIM_AFTER_S,
            "max_queued_per_user": 50,
            "max_running_per_user": 50,
        }
    )
    return base.model_copy(update={"data_dir": tmp_path, "queue": queue})


async def _bot(settings: Settings, engine: Any, store: Store) -> tuple[Any, Recorder]:
    from generation.remote.dispatcher import RemoteWorker

    rec = Recorder(store)
    return RemoteWorker(store, engine, settings, listener=rec), rec


@pytest.fixture
async def remote_bot(cluster, tiny_settings, tiny_engine, tmp_path):
    """A started ``RemoteWorker`` on its own store, with a recording listener."""
    redis, _procs = cluster
    store = await Store.open(tmp_path / "db.sqlite")
    bot, rec = await _bot(_settings(tiny_settings, tmp_path, redis), tiny_engine, store)
    await bot.start()
    yield bot, rec, store
    await bot.stop()
    await store.close()


async def _job_running(bot: Any) -> tuple[Job, str]:
    """A job long enough (8 steps) to be caught mid-way, and the worker that started it."""
    job = await bot.submit(req(1, 0, steps=8), user_id=1)
    await _wait(lambda: job.id in bot.started_on, 30, "the job to start")
    return job, bot.started_on[job.id]


def req(user: int, i: int, steps: int = 2) -> GenerationRequest:
    return GenerationRequest(prompt=f"user {user} picture {i}", count=1, steps=steps, seed=i)


async def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _all_delivered(store: Store, rec: Recorder, jobs: list[Job], timeout: float) -> None:
    try:
        await _wait(lambda: len(rec.delivered) == len(jobs), timeout, "every job delivered")
    except AssertionError:
        states = [
            (j.id, (await store.get_job(j.id)).status.value, rec.delivered[j.id]) for j in jobs
        ]
        raise AssertionError(f"not every job delivered: {states}") from None
    for job in jobs:
        stored = await store.get_job(job.id)
        assert stored.status == JobStatus.DONE, (job.id, stored.status, stored.error)
        assert len(await store.images_for_job(job.id)) == 1
    assert set(rec.delivered) == {j.id for j in jobs}
    assert all(n == 1 for n in rec.delivered.values()), rec.delivered


async def test_two_workers_serve_three_users_in_fair_order(
    cluster, tiny_settings, tiny_engine, tmp_path
):
    redis, _procs = cluster
    store = await Store.open(tmp_path / "db.sqlite")
    bot, rec = await _bot(_settings(tiny_settings, tmp_path, redis), tiny_engine, store)
    # Queued before the dispatcher starts: user 1 floods, users 2 and 3 ask for two each.
    jobs = [await bot.submit(req(1, i), user_id=1, guild_id=7) for i in range(4)]
    jobs += [await bot.submit(req(u, i), user_id=u, guild_id=7) for u in (2, 3) for i in range(2)]
    await bot.start()
    try:
        await _all_delivered(store, rec, jobs, 60)
    finally:
        await bot.stop()
    rows = await store.db.execute_fetchall("SELECT user_id FROM jobs ORDER BY started_at")
    # The stream holds only what free slots ask for, so jobs leave in the scheduler's fair
    # order: the flooding user does not get the GPUs to themselves.
    assert [r[0] for r in rows] == [1, 2, 3, 1, 2, 3, 1, 1]
    assert set(bot.finished_by.values()) == set(WORKERS)  # both GPUs worked
    await store.close()


async def test_stalled_worker_loses_its_job_and_its_late_result_is_dropped(cluster, remote_bot):
    redis, procs = cluster
    bot, rec, store = remote_bot
    job, stalled = await _job_running(bot)
    procs[stalled].send_signal(signal.SIGSTOP)  # hung (or cut off), not dead
    try:
        await _all_delivered(store, rec, [job], 60)
        assert bot.finished_by[job.id] != stalled
        before = await store.images_for_job(job.id)
    finally:
        procs[stalled].send_signal(signal.SIGCONT)  # it comes back and finishes its copy
    await _wait(
        lambda: _advertised(redis).get(stalled, {}).get("lost", 0) >= 1,
        30,
        "the returning worker to notice it lost the job",
    )
    await asyncio.sleep(1.0)
    assert rec.delivered[job.id] == 1
    assert await store.images_for_job(job.id) == before
    assert (await store.get_job(job.id)).status == JobStatus.DONE


async def test_redis_restart_loses_nothing(cluster, remote_bot):
    redis, _procs = cluster
    bot, rec, store = remote_bot
    jobs = [await bot.submit(req(u, i), user_id=u) for i in range(3) for u in (1, 2)]
    await asyncio.wait_for(rec.started_event.wait(), 30)
    redis.restart()  # kill -9, then start again from the append-only file
    await _all_delivered(store, rec, jobs, 90)


async def test_bot_restart_loses_nothing(cluster, tiny_settings, tiny_engine, tmp_path):
    redis, _procs = cluster
    settings = _settings(tiny_settings, tmp_path, redis)
    store = await Store.open(tmp_path / "db.sqlite")
    bot, rec = await _bot(settings, tiny_engine, store)
    await bot.start()
    jobs = [await bot.submit(req(u, i), user_id=u) for i in range(3) for u in (1, 2)]
    await asyncio.wait_for(rec.started_event.wait(), 30)
    # Crash: the bot's tasks die where they are; nothing is stopped cleanly.
    for task in [*bot._tasks, *bot._result_tasks, *bot._post_tasks]:
        task.cancel()
    await asyncio.sleep(0)
    await bot.redis.connection_pool.disconnect()  # its sockets close, as when a process dies
    await store.close()
    delivered_before = Counter(rec.delivered)

    store = await Store.open(tmp_path / "db.sqlite")
    bot, rec = await _bot(settings, tiny_engine, store)
    rec.delivered.update(delivered_before)
    await bot.start()
    try:
        await _all_delivered(store, rec, jobs, 90)
    finally:
        await bot.stop()
        await store.close()


async def test_jobs_only_go_to_workers_of_the_bots_model(cluster, remote_bot):
    redis, _procs = cluster
    bot, rec, store = remote_bot
    other = start_worker(
        redis.url, "--name", "gpu-sdxl", "--simulate-gpu", "0", "--model", "stabilityai/sdxl-turbo"
    )
    try:
        await _wait(lambda: _advertised_one(redis, "gpu-sdxl") is not None, 30, "other worker")
        await asyncio.sleep(1.0)  # the bot has read the advertisements meanwhile
        assert set(bot.workers) == set(WORKERS)
        assert bot.capacity == 2 * len(WORKERS)
        jobs = [await bot.submit(req(u, 0), user_id=u) for u in (1, 2, 3)]
        await _all_delivered(store, rec, jobs, 60)
        assert set(bot.finished_by[j.id] for j in jobs) <= set(WORKERS)
    finally:
        other.terminate()
        other.wait(20)


async def test_zoom_and_blend_jobs_carry_their_images_to_the_workers(remote_bot):
    """A zoom's source and a blend's images travel with the job (``init`` and ``ref<k>``)."""
    from PIL import Image

    bot, rec, store = remote_bot
    source = Image.linear_gradient("L").convert("RGB").resize((64, 64))
    zoom = GenerationRequest(
        "a bay", kind="zoom", canvas="zoom:2", init_image=source, strength=1.0, count=1,
        steps=2, seed=3,
    )
    refs = (Image.new("RGB", (64, 64), (200, 30, 30)), Image.new("RGB", (64, 64), (20, 30, 220)))
    blend = GenerationRequest("a bay", kind="blend", references=refs, count=1, steps=2, seed=3)
    jobs = [await bot.submit(r, user_id=5) for r in (zoom, blend)]
    await _all_delivered(store, rec, jobs, 90)
    (zoomed,) = await store.images_for_job(jobs[0].id)
    out = Image.open(zoomed.path).convert("RGB")
    assert out.size == (64, 64)
    centre = out.crop((16 + 4, 16 + 4, 48 - 4, 48 - 4))  # past the 2 px blended seam
    expected = source.resize((32, 32), Image.Resampling.LANCZOS).crop((4, 4, 28, 28))
    assert list(centre.getdata()) == list(expected.getdata()), "the source reached the worker"


def test_worker_reports_a_bad_redis_url_in_one_line():
    for url, expected in (
        ("nonsense://x", "is not a Redis URL"),
        ("redis://127.0.0.1:1/0", "cannot reach Redis at redis://127.0.0.1:1/0"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "bot.cli", "worker", "--redis", url, "--simulate-gpu", "0"],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2
        assert expected in done.stderr and "Traceback" not in done.stderr


async def test_kill_9_worker_mid_job_is_reclaimed_and_delivered_once(cluster, remote_bot):
    redis, procs = cluster
    bot, rec, store = remote_bot
    job, victim = await _job_running(bot)
    procs[victim].kill()  # SIGKILL mid-job
    procs[victim].wait(10)
    await _all_delivered(store, rec, [job], 60)
    survivor = next(n for n in WORKERS if n != victim)
    assert bot.finished_by[job.id] == survivor
    await _wait(  # it says so in its advertisement (refreshed every reclaim_after_s / 3)
        lambda: (_advertised_one(redis, survivor) or {}).get("reclaims", 0) >= 1,
        10,
        "the survivor to count the reclaim",
    )
    later = await bot.submit(req(2, 1), user_id=2)  # the survivor carries on alone
    await _all_delivered(store, rec, [job, later], 60)


def test_compose_scaleout_profile_is_off_by_default_and_durable():
    import yaml

    from bot.cli import build_parser

    doc = yaml.safe_load((ROOT / "compose.yaml").read_text())
    bot, redis, worker = (doc["services"][n] for n in ("bot", "redis", "worker"))
    assert "profiles" not in bot  # `docker compose up` alone: one process, no Redis
    assert redis["profiles"] == worker["profiles"] == ["scaleout"]
    flags = redis["command"]
    assert flags[flags.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") and v.split(":")[0] in doc["volumes"] for v in redis["volumes"])
    args = build_parser().parse_args(worker["command"])  # the image's entrypoint is imagine-bot
    assert args.command == "worker" and args.redis == "redis://redis:6379/0"
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
