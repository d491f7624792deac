"""What metrics cost the bot: scrape time on the event loop, and bookkeeping per job event.

    python -m bench.ops_metrics
    python -m bench.ops_metrics --queued 0 100 1000 5000 --repeat 20

A scrape runs on the bot's event loop (the one that also answers Discord heartbeats and the
3-second interaction deadline), and the per-guild queue gauge is computed at scrape time from the
fair scheduler. This measures, side by side in one run: a scrape with an empty queue vs. with N
queued jobs over 7 guilds (goal: well under 20 ms at realistic queue sizes, so a 15 s scrape
interval never delays Discord), the cost of ``observe_job_event`` per event next to a bare
function call, and one real HTTP scrape through the aiohttp server. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from types import SimpleNamespace

from core import metrics
from core.jobs import JobStatus
from generation.scheduler import Entry, Scheduler


def scheduler_with(queued: int) -> Scheduler:
    sched = Scheduler()
    for i in range(queued):
        sched.push(
            Entry(
                job_id=f"j{i}",
                user_id=i % 300,
                guild_id=i % 7,
                cost=1.0 + i % 3,
                seq=i,
                weight=1.0,
                batch_key=None,
                payload=None,
            )
        )
    return sched


def time_scrapes(queued: int, repeat: int) -> dict[str, float]:
    metrics.watch_worker(SimpleNamespace(scheduler=scheduler_with(queued)))
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        metrics.render_metrics()
        samples.append((time.perf_counter() - start) * 1000)
    metrics.worker_stopped()
    return {"median_ms": round(statistics.median(samples), 3), "max_ms": round(max(samples), 3)}


def time_events(n: int) -> dict[str, float]:
    now = time.time()
    job = SimpleNamespace(
        status=JobStatus.DONE, created_at=now - 2, started_at=now - 1, finished_at=now + 1
    )
    images = [object()] * 4

    def bare(method: str, *args: object) -> None:
        return None

    def per_event(fn) -> float:
        start = time.perf_counter()
        for _ in range(n):
            fn("on_started", job)
            fn("on_progress", job, None)
            fn("on_done", job, images)
        return (time.perf_counter() - start) / (3 * n) * 1e6

    metrics.watch_worker(SimpleNamespace(scheduler=scheduler_with(0)))
    observed, baseline = per_event(metrics.observe_job_event), per_event(bare)
    metrics.worker_stopped()
    return {
        "observe_us_per_event": round(observed, 2),
        "bare_call_us": round(baseline, 3),
        "ratio": round(observed / baseline, 1),
    }


async def time_http(queued: int) -> float:
    import aiohttp

    metrics.watch_worker(SimpleNamespace(scheduler=scheduler_with(queued)))
    server = await metrics.MetricsServer("127.0.0.1", 0).start()
    try:
        async with aiohttp.ClientSession() as session:
            await (await session.get(server.url + "/metrics")).read()  # warm-up
            start = time.perf_counter()
            async with session.get(server.url + "/metrics") as resp:
                await resp.read()
            return round((time.perf_counter() - start) * 1000, 3)
    finally:
        await server.stop()
        metrics.worker_stopped()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queued", type=int, nargs="+", default=[0, 100, 1000, 5000])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--events", type=int, default=20000)
    args = parser.parse_args()
    scrapes = {str(q): time_scrapes(q, args.repeat) for q in args.queued}
    base = scrapes[str(args.queued[0])]["median_ms"]
    result = {
        "scrape_on_loop": scrapes,
        "scrape_ratio_vs_first": {
            q: round(s["median_ms"] / base, 1) if base else None for q, s in scrapes.items()
        },
        "job_events": time_events(args.events),
        "http_scrape_ms": {
            str(q): asyncio.run(time_http(q)) for q in (args.queued[0], args.queued[-1])
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
