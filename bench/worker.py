"""How close the worker keeps the GPU to the bare engine, and whether the event loop stays free.

    python -m bench.worker            # 32 default /imagine jobs (4 images) from 4 users, tiny, CPU
    python -m bench.worker --count 1 --jobs 64 --users 8 --steps 8 --size 64

Runs the same jobs (same seeds) in one process, side by side: through the bare engine (one
``engine.generate`` per job, back to back, nothing else) and through the real ``Worker`` (store,
scheduler, feeder, post-processing, listener; the jobs arrive as a burst at the running worker).
Prints JSON:

- ``throughput_ratio``: worker jobs/s divided by bare-engine jobs/s (goal >= 0.90 on CPU; with
  co-batching it can exceed 1). Each worker run is bracketed by two bare runs (a shared
  machine's speed drifts); the save-PNGs run is repeated ``--repeats`` times, median reported.
- ``gpu_idle_gap_ms`` p50/p99: time between one generation ending and the next starting.
- ``loop_lag_ms`` p99: how late a 5 ms heartbeat on the event loop fires (goal < 20 ms).
- per job: ``bare_generation_ms_per_job``, ``worker_generation_ms_per_job`` (slower when other
  threads take the GIL or the core) and ``postprocess_ms_per_job`` (median wall time).

Three worker runs. ``worker_save_pngs``: the default PNG saver, i.e. the pipeline's own overhead;
this is the >= 0.90 goal. Then the real moderation/watermark/provenance step
(``moderation.postprocess``) without and with co-batching; issue #17's goal for the first is
>= 0.30. On a GPU machine that step runs on CPU cores beside the GPU (NudeNet on the GPU with
onnxruntime-gpu). On a CPU-only machine it shares the cores with the "GPU", and part of its cost
is fixed per image whatever the size: NudeNet scales every image to 320 px (14-69 ms measured here, ~100
ms when the 2 cores are busy), the keyed mark's read-back check and C2PA signing add ~10-50 ms,
while the tiny model makes a 64-px image in ~40 ms. So the step, not the worker, bounds the
throughput: ``postprocess_bound`` = post-processing threads x generation time / post-processing
time per job is that bound, and the worker's ratio should come close to it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from core.config import Settings
from core.store import Store
from generation.engine import Engine
from generation.request import GenerationRequest
from generation.worker import Worker, leave_a_core_for_the_pipeline, save_pngs


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def real_postprocess(store: Store, settings: Settings) -> tuple[Any, str]:
    """The moderation pipeline's post-processing step if it exists, else None."""
    try:
        from moderation import postprocess as module
    except ImportError:
        return None, "default (save PNGs)"
    for name in ("build_postprocess", "make_postprocess", "Postprocessor"):
        factory = getattr(module, name, None)
        if factory is not None:
            try:
                return factory(store=store, settings=settings), f"moderation.postprocess.{name}"
            except TypeError:
                return factory(settings), f"moderation.postprocess.{name}"
    return None, "default (save PNGs; moderation.postprocess has no known factory)"


class TimedPostprocess:
    """Wraps the worker's post-processing step to record how long each job's took (wall ms)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.wall_ms: list[float] = []

    def __call__(self, job: Any, result: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.inner(job, result)
        finally:
            self.wall_ms.append((time.perf_counter() - started) * 1e3)


async def bare(engine: Engine, reqs: list[GenerationRequest]) -> float:
    """Seconds for the bare engine to run every job, one call each, in one thread."""
    threads = torch.get_num_threads()  # what the worker's GPU thread uses

    def run() -> float:
        # torch keeps the thread count a thread started with: this pool thread may predate
        # leave_a_core_for_the_pipeline and would otherwise run with every core.
        torch.set_num_threads(threads)
        started = time.perf_counter()
        for req in reqs:
            engine.generate([req])
        return time.perf_counter() - started

    return await asyncio.to_thread(run)


async def through_worker(
    engine: Engine,
    settings: Settings,
    reqs: list[GenerationRequest],
    users: int,
    *,
    cobatch: bool,
    real_post: bool,
) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="imagine-bench-"))
    settings = settings.model_copy(
        update={
            "data_dir": data,
            "queue": settings.queue.model_copy(
                update={"cobatch": cobatch, "max_queued_per_user": len(reqs)}
            ),
        }
    )
    store = await Store.open(settings.db_path)
    post, post_name = real_postprocess(store, settings) if real_post else (None, "default (save PNGs)")
    timed = TimedPostprocess(post or save_pngs(settings.images_dir))
    worker = Worker(store, engine, settings, postprocess=timed)
    lags: list[float] = []

    async def heartbeat() -> None:
        period = 0.005
        while True:
            due = time.perf_counter() + period
            await asyncio.sleep(period)
            lags.append(max(0.0, time.perf_counter() - due))

    beat = asyncio.create_task(heartbeat())
    # A burst arriving at a running worker: accepting jobs overlaps generation, as in the bot.
    await worker.start()
    started = time.perf_counter()
    for i, req in enumerate(reqs):
        await worker.submit(req, user_id=i % users, guild_id=1)
    await worker.join()
    elapsed = time.perf_counter() - started
    beat.cancel()
    await worker.stop()
    statuses = [j.status.value for j in await store.jobs_for_user(0, limit=len(reqs))]
    await store.close()
    intervals = list(worker.gpu_intervals)
    gaps = [(b[0] - a[1]) * 1e3 for a, b in zip(intervals, intervals[1:], strict=False)]
    return {
        "seconds": elapsed,
        "gpu_calls": len(worker.gpu_intervals),
        "intervals": intervals,
        "gaps_ms": gaps,
        "lags_ms": [x * 1e3 for x in lags],
        "postprocess": post_name,
        "post_ms": timed.wall_ms,
        "all_done": all(s == "done" for s in statuses),
    }


async def measure_runs(
    engine: Engine, settings: Settings, reqs: list[GenerationRequest], args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """Each worker configuration, bracketed by bare-engine runs: the run with the median ratio."""
    configs = {
        "worker_save_pngs": {"cobatch": False, "real_post": False},
        "worker_real_postprocess": {"cobatch": False, "real_post": True},
        "worker_real_postprocess_cobatch": {"cobatch": True, "real_post": True},
    }
    runs = {}
    for name, config in configs.items():
        # Bracket each worker run with bare runs: a shared machine's speed drifts. The pipeline
        # run is repeated (single runs swing by several percent on a shared 2-core machine) and
        # the repetition with the median ratio is reported, with every ratio alongside.
        reps = []
        for _ in range(args.repeats if name == "worker_save_pngs" else 1):
            before = await bare(engine, reqs)
            run = await through_worker(engine, settings, reqs, args.users, **config)
            after = await bare(engine, reqs)
            run["bare_s"] = [before, after]
            run["ratio"] = (before + after) / 2 / run["seconds"]
            reps.append(run)
        ranked = sorted(reps, key=lambda r: r["ratio"])
        runs[name] = ranked[len(ranked) // 2]
        runs[name]["ratios"] = [r["ratio"] for r in reps]
    return runs


def summary(run: dict[str, Any], jobs: int, post_threads: int) -> dict[str, Any]:
    """One configuration's figures, as printed."""
    bare_mean = sum(run["bare_s"]) / 2
    busy = sum(b - a for a, b in run["intervals"])
    bare_job_ms = bare_mean / jobs * 1e3
    post_ms = percentile(run["post_ms"], 50)
    return {
        "postprocess": run["postprocess"],
        "bare_engine_s": [round(x, 3) for x in run["bare_s"]],
        "worker_s": round(run["seconds"], 3),
        "bare_jobs_per_s": round(jobs / bare_mean, 3),
        "worker_jobs_per_s": round(jobs / run["seconds"], 3),
        "throughput_ratio": round(run["ratio"], 3),
        "throughput_ratio_each_run": [round(x, 3) for x in run["ratios"]],
        "gpu_busy_fraction": round(busy / run["seconds"], 3),
        # Per job: the bare engine's generation, the worker's (slower when other threads take
        # the GIL or the core from it), and the post-processing step (median, wall).
        "bare_generation_ms_per_job": round(bare_job_ms, 1),
        "worker_generation_ms_per_job": round(busy / jobs * 1e3, 1),
        "postprocess_ms_per_job": round(post_ms, 1),
        # On a CPU the post-processing shares the machine with the "GPU": once it takes longer
        # than a generation, it and not the worker bounds the throughput near this ratio
        # (``queue.postprocess_threads`` jobs are post-processed at once).
        "postprocess_bound": (
            round(min(1.0, post_threads * bare_job_ms / post_ms), 3) if post_ms else 1.0
        ),
        "gpu_calls": run["gpu_calls"],
        "gpu_idle_gap_ms": {
            "p50": round(percentile(run["gaps_ms"], 50), 2),
            "p99": round(percentile(run["gaps_ms"], 99), 2),
        },
        "loop_lag_ms": {
            "p50": round(percentile(run["lags_ms"], 50), 2),
            "p99": round(percentile(run["lags_ms"], 99), 2),
            "max": round(max(run["lags_ms"], default=0.0), 2),
        },
        "all_done": run["all_done"],
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    cache = Path(tempfile.gettempdir()) / "imagine-bench-cache"
    settings = Settings(
        data_dir=Path(tempfile.mkdtemp(prefix="imagine-bench-")),
        model={"name": args.model, "device": args.device, "cache_dir": cache},
    )
    engine = await asyncio.to_thread(Engine.load, settings)
    reqs = [
        engine.validate(
            GenerationRequest(
                prompt=f"a lighthouse at dusk, study {i}", width=args.size, height=args.size,
                steps=args.steps, count=args.count, seed=1000 + i,
            )
        )
        for i in range(args.jobs)
    ]
    # A worker on a CPU gives torch every core but one (see leave_a_core_for_the_pipeline);
    # the bare engine gets the same torch threads, so the ratio measures the pipeline alone.
    leave_a_core_for_the_pipeline(engine)
    await bare(engine, reqs[:2])  # warm-up (first call allocates)
    runs = await measure_runs(engine, settings, reqs, args)
    post_threads = settings.queue.postprocess_threads
    out = {
        "model": args.model,
        "device": str(engine.device),
        "jobs": args.jobs,
        "users": args.users,
        "job": f"{args.size}x{args.size}, {args.steps} steps, {args.count} image(s)",
        "torch_threads": torch.get_num_threads(),
        **{name: summary(run, args.jobs, post_threads) for name, run in runs.items()},
    }
    out["checks"] = {
        "throughput_ratio >= 0.90 (worker_save_pngs)": (
            out["worker_save_pngs"]["throughput_ratio"] >= 0.90
        ),
        "throughput_ratio >= 0.30 (worker_real_postprocess)": (
            out["worker_real_postprocess"]["throughput_ratio"] >= 0.30
        ),
        "loop lag p99 < 20 ms (every run)": all(
            out[name]["loop_lag_ms"]["p99"] < 20 for name in runs
        ),
    }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=32)
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument(
        "--count", type=int, default=4,
        help="images per job (4: a default /imagine; 1 is the harsher case for the pipeline)",
    )
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--repeats", type=int, default=5,
        help="bare/worker/bare repetitions of the save-PNGs run; the median ratio is reported",
    )
    args = parser.parse_args()
    out = asyncio.run(main_async(args))
    print(json.dumps(out, indent=2))
    return 0 if all(out["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
