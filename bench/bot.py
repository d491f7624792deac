"""Does the bot answer a burst of /imagine in time while the GPU works?

    python -m bench.bot                   # 500 /imagine from 100 users, tiny model on CPU
    python -m bench.bot --count 200 --users 40 --lag-seconds 10

Runs the real bot (discord.py client, cogs, prompt gate, store, worker, tiny diffusion model,
real post-processing) against the loopback Discord emulator, which runs in a second process as
Discord would (so its own CPU time is not charged to the bot). Two bursts, side by side, each on
a fresh bot and store:

- ``all_at_once``: every INTERACTION_CREATE sent in the same instant (the worst case);
- ``paced``: ``--rate`` commands per second (a busy server's evening).

For each it prints JSON:

- ``defer_ms`` p50/p99/max: from the emulator dispatching INTERACTION_CREATE to receiving the
  bot's first callback (goal p99 < 100 ms; Discord's hard limit is 3000 ms);
- ``acknowledged``: interactions answered within 3 s, out of ``sent`` (goal: all);
- ``jobs_queued``: how many became jobs (each user may queue ``queue.max_queued_per_user``);
- ``loop_lag_ms`` p50/p99/max: how late a 10 ms timer on the bot's event loop fires, during the
  burst and while the worker generates and post-processes afterwards (GPU work runs in threads;
  a blocked loop would show here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(_pct(values, 0.50), 2),
        "p99": round(_pct(values, 0.99), 2),
        "max": round(max(values, default=float("nan")), 2),
        "mean": round(statistics.fmean(values), 2) if values else float("nan"),
    }


class LagProbe:
    """How late a periodic timer fires: the event loop's responsiveness."""

    def __init__(self, period_s: float = 0.01) -> None:
        self.period = period_s
        self.lags_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.period)
            self.lags_ms.append(max(0.0, (loop.time() - start - self.period) * 1000))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


# --- the Discord side (child process) ---------------------------------------------------------


def _discord_side(conn: Any, count: int, users: int, rate: float) -> None:
    asyncio.run(_drive(conn, count, users, rate))


async def _drive(conn: Any, count: int, users: int, rate: float) -> None:
    from tests.emulator_client import running_emulator

    loop = asyncio.get_running_loop()
    async with running_emulator() as emu:
        conn.send(
            {
                "token": emu.token,
                "api_base": emu.api_base,
                "gateway_url": emu.gateway_url,
                "guild_id": emu.guild.id,
            }
        )
        await emu.wait_until_connected(timeout=300)
        await emu.wait_for(lambda: emu.find_command("imagine", emu.guild.id), 120, "command sync")
        await loop.run_in_executor(None, conn.recv)  # the bot side is ready to measure
        people = [emu.world.add_user(f"user{i}", guild=emu.guild) for i in range(users)]

        def send(i: int) -> Any:
            return emu.send_slash(
                "imagine", {"prompt": f"a lighthouse number {i} --seed {i}"}, user=people[i % users]
            )

        started = time.perf_counter()
        if rate <= 0:
            iids = await asyncio.gather(*(send(i) for i in range(count)))
        else:
            iids = []
            for i in range(count):
                iids.append(await send(i))
                await asyncio.sleep(1 / rate)
        await emu.wait_for(
            lambda: all(emu.interaction(i).acknowledged for i in iids), 120, "every defer"
        )
        burst_s = time.perf_counter() - started
        defer_ms, acknowledged = [], 0
        for iid in iids:
            inter = emu.interaction(iid)
            if inter.responded_at is not None:
                delay = inter.responded_at - inter.created_at
                defer_ms.append(delay * 1000)
                acknowledged += delay <= 3.0
        conn.send(
            {
                "sent": count,
                "acknowledged": acknowledged,
                "defer_ms": _summary(defer_ms),
                "defer_p99_within_goal": _pct(defer_ms, 0.99) < 100,
                "burst_s": round(burst_s, 2),
                "violations": sorted({v.rule for v in emu.violations}),
            }
        )
        await loop.run_in_executor(None, conn.recv)  # keep serving until the bot has stopped


# --- the bot side (this process) --------------------------------------------------------------


async def run_burst(
    *,
    count: int,
    users: int,
    rate: float,
    lag_seconds: float,
    steps: int,
    no_freeze: bool,
    profile: str | None = None,
) -> dict[str, Any]:
    from bot.client import start_bot, stop_bot
    from bot.runner import make_postprocess, settle_heap
    from bot.services import Services
    from core.config import Settings
    from core.store import Store
    from generation.engine import Engine
    from generation.worker import Worker

    loop = asyncio.get_running_loop()
    ctx = multiprocessing.get_context("spawn")
    here, there = ctx.Pipe()
    child = ctx.Process(target=_discord_side, args=(there, count, users, rate), daemon=True)
    child.start()
    try:
        info = await loop.run_in_executor(None, here.recv)
        settings = Settings(
            data_dir=Path(tempfile.mkdtemp(prefix="imagine-bench-")),
            model={"name": "tiny", "device": "cpu", "default_steps": steps},
            queue={"max_queued_per_user": max(1, -(-count // users))},
            discord={
                "token": info["token"],
                "api_base": info["api_base"],
                "gateway_url": info["gateway_url"],
                "dev_guilds": [info["guild_id"]],
            },
        )
        engine = await asyncio.to_thread(Engine.load, settings)
        store = await Store.open(settings.db_path)
        worker = Worker(store, engine, settings, postprocess=make_postprocess(settings, store))
        bot = await start_bot(Services(settings, store, engine, worker), timeout=120)
        if not no_freeze:
            settle_heap()  # as `imagine-bot run` does once ready
        probe = LagProbe()
        probe.start()
        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        here.send("go")
        result = await loop.run_in_executor(None, here.recv)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        burst_lag = list(probe.lags_ms)
        await asyncio.sleep(lag_seconds)  # the worker generates and post-processes meanwhile
        await probe.stop()
        async with store.db.execute("SELECT COUNT(*), SUM(status = 'done') FROM jobs") as cur:
            jobs, done = await cur.fetchone()
        await stop_bot(bot, finish_running=False)
        await store.close()
        here.send("stop")
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
    result.update(
        rate_per_s=rate if rate > 0 else "all at once",
        users=users,
        jobs_queued=jobs,
        jobs_done_in_lag_window=done or 0,
        loop_lag_ms_burst=_summary(burst_lag),
        loop_lag_ms_generating=_summary(probe.lags_ms[len(burst_lag) :]),
        lag_window_s=lag_seconds,
        gc_freeze=not no_freeze,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=500, help="slash commands per burst")
    parser.add_argument("--users", type=int, default=100, help="distinct users sending them")
    parser.add_argument("--rate", type=float, default=100, help="commands per second when paced")
    parser.add_argument("--lag-seconds", type=float, default=10.0, help="watch the loop this long")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps per job")
    parser.add_argument(
        "--only", choices=["all_at_once", "paced"], help="run just one of the two bursts"
    )
    parser.add_argument(
        "--no-gc-freeze", action="store_true", help="leave the loaded heap to the GC (before)"
    )
    parser.add_argument("--profile", help="cProfile the bot side during the burst into this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    common = dict(
        count=args.count,
        users=args.users,
        lag_seconds=args.lag_seconds,
        steps=args.steps,
        no_freeze=args.no_gc_freeze,
        profile=args.profile,
    )
    result: dict[str, Any] = {}
    for name, rate in (("all_at_once", 0.0), ("paced", args.rate)):
        if args.only in (None, name):
            result[name] = asyncio.run(run_burst(rate=rate, **common))
    result["goal"] = "defer p99 < 100 ms, every interaction acknowledged"
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
