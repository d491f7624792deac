"""Does the bot answer a burst of /imagine in time while the GPU works?

    python bench/bot.py                   # 500 /imagine from 100 users, tiny model on CPU
    python bench/bot.py --count 200 --users 40 --lag-seconds 10

Runs the real bot (discord.py client, cogs, prompt gate, store, worker, tiny diffusion model)
against the loopback Discord emulator in one process, sends the whole burst of slash commands at
once over the gateway, and prints JSON:

- ``defer_ms`` p50/p99/max: from the emulator dispatching INTERACTION_CREATE to receiving the
  bot's first callback (goal p99 < 100 ms; Discord's hard limit is 3000 ms). The emulator runs on
  the same event loop, so its own work is included: the figure is an upper bound.
- ``acknowledged``: interactions answered within 3 s, out of ``sent`` (goal: all).
- ``jobs_queued``: how many became jobs (each user may queue ``queue.max_queued_per_user``).
- ``loop_lag_ms`` p50/p99/max: how late a 10 ms timer on the event loop fires, during the burst
  and while the worker generates and post-processes afterwards (the GPU work runs in threads;
  a blocked loop would show here and as a heartbeat warning).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.client import start_bot, stop_bot  # noqa: E402
from bot.runner import make_postprocess  # noqa: E402
from bot.services import Services  # noqa: E402
from generation.config import Settings  # noqa: E402
from generation.engine import Engine  # noqa: E402
from generation.store import Store  # noqa: E402
from generation.worker import Worker  # noqa: E402
from tests.discord_emulator import running_emulator  # noqa: E402


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


async def bench(
    count: int, users: int, lag_seconds: float, steps: int, rate: float
) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="imagine-bench-"))
    async with running_emulator() as emu:
        settings = Settings(
            data_dir=tmp,
            model={"name": "tiny", "device": "cpu", "default_steps": steps},
            queue={"max_queued_per_user": max(1, -(-count // users))},
            discord={
                "token": emu.token,
                "api_base": emu.api_base,
                "gateway_url": emu.gateway_url,
                "dev_guilds": [emu.guild.id],
            },
        )
        engine = await asyncio.to_thread(Engine.load, settings)
        store = await Store.open(settings.db_path)
        worker = Worker(store, engine, settings, postprocess=make_postprocess(settings, store))
        bot = await start_bot(Services(settings, store, engine, worker), timeout=60)
        await emu.wait_until_connected()
        people = [emu.world.add_user(f"user{i}", guild=emu.guild) for i in range(users)]

        probe = LagProbe()
        probe.start()
        started = time.perf_counter()

        def send(i: int) -> Any:
            return emu.send_slash(
                "imagine", {"prompt": f"a lighthouse number {i} --seed {i}"}, user=people[i % users]
            )

        if rate <= 0:  # all at once: the worst case, every event in the same instant
            iids = await asyncio.gather(*(send(i) for i in range(count)))
        else:  # paced: a busy server's evening, `rate` commands per second
            iids = []
            for i in range(count):
                iids.append(await send(i))
                await asyncio.sleep(1 / rate)
        await emu.wait_for(
            lambda: all(emu.interaction(i).acknowledged for i in iids), 60, "every defer"
        )
        burst_s = time.perf_counter() - started
        burst_lag = list(probe.lags_ms)
        await asyncio.sleep(lag_seconds)  # the worker generates and post-processes meanwhile
        await probe.stop()
        working_lag = probe.lags_ms[len(burst_lag) :]

        defer_ms = []
        acknowledged = 0
        for iid in iids:
            inter = emu.interaction(iid)
            if inter.responded_at is not None:
                delay = inter.responded_at - inter.created_at
                defer_ms.append(delay * 1000)
                acknowledged += delay <= 3.0
        async with store.db.execute("SELECT COUNT(*) FROM jobs") as cur:
            jobs = (await cur.fetchone())[0]
        async with store.db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'done'") as cur:
            done = (await cur.fetchone())[0]
        await stop_bot(bot, finish_running=False)
        await store.close()
        return {
            "sent": count,
            "rate_per_s": rate if rate > 0 else "all at once",
            "users": users,
            "acknowledged": acknowledged,
            "defer_ms": _summary(defer_ms),
            "defer_goal_p99_ms": 100,
            "defer_p99_within_goal": _pct(defer_ms, 0.99) < 100,
            "burst_s": round(burst_s, 2),
            "jobs_queued": jobs,
            "jobs_done_in_lag_window": done,
            "loop_lag_ms_burst": _summary(burst_lag),
            "loop_lag_ms_generating": _summary(working_lag),
            "lag_window_s": lag_seconds,
            "violations": [v.rule for v in emu.violations][:10],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=500, help="slash commands in the burst")
    parser.add_argument("--users", type=int, default=100, help="distinct users sending them")
    parser.add_argument("--lag-seconds", type=float, default=15.0, help="watch the loop this long")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps per job")
    parser.add_argument(
        "--rate", type=float, default=0, help="commands per second (0: the whole burst at once)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    result = asyncio.run(bench(args.count, args.users, args.lag_seconds, args.steps, args.rate))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
