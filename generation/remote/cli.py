"""``imagine-bot worker``: start a GPU worker that serves a bot over Redis Streams."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from typing import Any

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "worker",
        help='run a GPU worker for a bot with queue.backend = "redis"',
        description="Serve /imagine jobs from a bot over Redis Streams on this machine's GPU. "
        'Start one per GPU; the bot (queue.backend = "redis") hands out the jobs.',
    )
    p.add_argument("--redis", metavar="URL", help="Redis URL (default: queue.redis_url)")
    p.add_argument("--name", help="worker name, unique per worker (default: host-pid)")
    p.add_argument(
        "--slots",
        type=int,
        default=2,
        help="jobs held at once: the one on the GPU plus the next (default 2)",
    )
    p.add_argument("--model", help="hub id, diffusers folder, .safetensors/.ckpt file, or tiny")
    p.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"])
    p.add_argument(
        "--simulate-gpu",
        type=float,
        metavar="SECONDS",
        help="benchmarks only: no model, sleep SECONDS per batch and return grey images",
    )
    p.set_defaults(handler=_worker)


def _worker(args: argparse.Namespace) -> int:
    from core.config import load_settings
    from core.errors import UserInputError
    from core.logging_setup import setup_logging

    model: dict[str, Any] = {}
    if args.model:
        model["name"] = args.model
    if args.device:
        model["device"] = args.device
    settings = load_settings(args.config, **({"model": model} if model else {}))
    if args.slots < 1:
        raise UserInputError("--slots must be at least 1")
    if args.simulate_gpu is not None and not args.simulate_gpu >= 0:
        raise UserInputError("--simulate-gpu must be a number of seconds, 0 or more")
    setup_logging(settings)
    asyncio.run(serve(settings, args))
    return 0


async def serve(settings: Any, args: argparse.Namespace) -> None:
    from generation.remote import protocol
    from generation.remote.gpu_worker import EngineRunner, GpuWorker, SimulatedRunner

    url = args.redis or settings.queue.redis_url
    redis = protocol.redis_client(url)
    try:
        await redis.ping()
    except Exception as exc:  # noqa: BLE001 - one clear line instead of a traceback
        from core.errors import UserInputError

        raise UserInputError(f"cannot reach Redis at {url}: {exc}") from None
    if args.simulate_gpu is not None:
        runner: Any = SimulatedRunner(args.simulate_gpu, settings.model.name)
    else:
        from generation.engine import Engine

        log.info("loading model %s", settings.model.name)
        runner = EngineRunner(await asyncio.to_thread(Engine.load, settings))
    worker = GpuWorker(
        redis,
        runner,
        name=args.name,
        slots=args.slots,
        max_batch=settings.model.max_batch,
        reclaim_after_s=settings.queue.reclaim_after_s,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await worker.run(stop)
    finally:
        await redis.aclose()
