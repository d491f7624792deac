"""Scale-out on Redis Streams: 1, 2 and 4 GPU workers behind one bot.

    python -m bench.scaleout [--seconds 0.25] [--jobs 40,20,10,10]

Each worker is a real ``imagine-bot worker`` process on a real Redis (the test suite's
``tests/redis_server.py``), but it SIMULATES the GPU: it sleeps ``--seconds`` per job and returns
a grey image (``--simulate-gpu``), because a 2-core machine cannot run four denoisers side by
side. The bot is the real ``RemoteWorker``: fair-share scheduler, SQLite store, result decoding,
PNG post-processing; only model validation uses a stand-in (the tiny model's defaults).

Printed per worker count: jobs/s, the ratio to N x one worker, dispatch latency p50/p99 (a
worker's idle gap between finishing a job and starting the next while jobs are waiting) and
Jain's fairness index over users (service counted while every user still has jobs waiting).
Targets: ratio >= 0.9 at 4 workers, dispatch p99 < 20 ms, Jain >= 0.99.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from core.config import Settings
from core.store import Store
from generation.remote.dispatcher import RemoteWorker
from generation.request import GenerationRequest, ModelDefaults, resolve
from generation.worker import NullListener
from tests.redis_server import RedisServer, start_worker

MODEL = "simulated-gpu"


class ValidationOnlyEngine:
    """What the bot asks of an engine (validate, price, batch key), without a model."""

    name = MODEL
    device = None

    def __init__(self, settings: Settings) -> None:
        self.limits = settings.model
        self.defaults = ModelDefaults("tiny", size=64, steps=2, guidance=5.0, scheduler="euler")

    def validate(self, req: GenerationRequest) -> GenerationRequest:
        return resolve(req, self.defaults, self.limits)

    def batch_key(self, req: GenerationRequest) -> Any:
        return (req.width, req.height, req.steps)

    def estimate_cost(self, req: GenerationRequest) -> float:
        return req.width * req.height / 1e6 * req.steps * req.count


class Recorder(NullListener):
    def __init__(self, store: Store) -> None:
        self.store = store
        self.started: list[int] = []  # user ids in start order
        self.delivered: Counter[str] = Counter()
        self.first_start: float | None = None
        self.last_done = 0.0

    async def on_started(self, job: Any) -> None:
        self.first_start = self.first_start or time.perf_counter()
        self.started.append(job.user_id)

    async def on_done(self, job: Any, images: Any) -> None:
        if await self.store.mark_delivered(job.id):
            self.delivered[job.id] += 1
        self.last_done = time.perf_counter()


def jain(values: list[float]) -> float:
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values)) if values else 1.0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def run_once(
    n: int, redis: RedisServer, demand: list[int], seconds: float, slots: int
) -> dict:
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis.url)
    await client.flushall()
    folder = Path(tempfile.mkdtemp(prefix="imscale-"))
    settings = Settings(
        data_dir=folder,
        model={"name": MODEL, "max_batch": 1},
        queue={"backend": "redis", "redis_url": redis.url, "max_queued_per_user": 10_000},
    )
    env = {"IMAGINE_MODEL__MAX_BATCH": "1", "IMAGINE_MODEL__NAME": MODEL}
    procs = [
        start_worker(
            redis.url,
            "--simulate-gpu",
            str(seconds),
            "--name",
            f"w{i}",
            "--slots",
            str(slots),
            env=env,
        )
        for i in range(n)
    ]
    # Measure N workers, not N processes starting: wait until every one has advertised itself.
    deadline = time.monotonic() + 120
    while len([k for k in await client.mget([f"imagine:worker:w{i}" for i in range(n)]) if k]) < n:
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise SystemExit("workers did not start")
        await asyncio.sleep(0.1)
    store = await Store.open(settings.db_path)
    rec = Recorder(store)
    bot = RemoteWorker(store, ValidationOnlyEngine(settings), settings, listener=rec)
    try:
        # Every job is queued before any worker is seen, so all users are backlogged from the
        # start and the fair order alone decides who goes next.
        for user, count in enumerate(demand, start=1):
            for i in range(count):
                await bot.submit(
                    GenerationRequest(prompt=f"u{user} job {i}", count=1), user_id=user, guild_id=1
                )
        await bot.start()
        await asyncio.wait_for(bot.join(), timeout=60 + 3 * sum(demand) * seconds)
    finally:
        await bot.stop()
        await store.close()
        await client.aclose()
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(20)
        shutil.rmtree(folder, ignore_errors=True)
    total = sum(demand)
    elapsed = rec.last_done - (rec.first_start or rec.last_done)
    # While every user is backlogged: the first len(demand) x min(demand) starts.
    window = rec.started[: len(demand) * min(demand)]
    share = Counter(window)
    gaps = list(bot.dispatch_gaps_ms)
    return {
        "workers": n,
        "jobs": total,
        "jobs_per_s": (total - 1) / elapsed if elapsed > 0 else float("nan"),
        "p50": pct(gaps, 50),
        "p99": pct(gaps, 99),
        "jain": jain([share.get(u, 0) for u in range(1, len(demand) + 1)]),
        "delivered_once": all(v == 1 for v in rec.delivered.values())
        and len(rec.delivered) == total,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.25, help="simulated GPU s per job")
    parser.add_argument("--jobs", default="40,20,10,10", help="jobs per user")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument(
        "--slots",
        type=int,
        default=2,
        help="jobs a worker holds (default 2 = one prefetched; 1 = every job fetched on demand)",
    )
    args = parser.parse_args()
    demand = [int(x) for x in args.jobs.split(",")]
    import generation.engine  # noqa: F401 - the bot decodes results with it; import it untimed

    redis = RedisServer().start()
    print(
        f"SIMULATED GPU: each worker sleeps {args.seconds} s per job (2-core machine); "
        f"{sum(demand)} jobs from {len(demand)} users {demand}, real Redis + worker processes, "
        f"{args.slots} slots per worker"
    )
    rows = []
    try:
        for n in (int(x) for x in args.workers.split(",")):
            rows.append(await run_once(n, redis, demand, args.seconds, args.slots))
    finally:
        redis.close()
    base = rows[0]["jobs_per_s"] / rows[0]["workers"]
    print(f"{'workers':>7} {'jobs/s':>7} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7} {'Jain':>6} once")
    for r in rows:
        ratio = r["jobs_per_s"] / (r["workers"] * base)
        print(
            f"{r['workers']:>7} {r['jobs_per_s']:>7.2f} {ratio:>6.3f} {r['p50']:>7.2f} "
            f"{r['p99']:>7.2f} {r['jain']:>6.4f} {r['delivered_once']}"
        )
    last = rows[-1]
    print(
        f"targets: ratio >= 0.9 at {last['workers']} workers: "
        f"{last['jobs_per_s'] / (last['workers'] * base):.3f}; "
        f"dispatch p99 < 20 ms: {max(r['p99'] for r in rows):.2f} ms; "
        f"Jain >= 0.99: {min(r['jain'] for r in rows):.4f}"
    )
    print(f"(median gap over all runs {statistics.median([r['p50'] for r in rows]):.2f} ms)")


if __name__ == "__main__":
    asyncio.run(main())
