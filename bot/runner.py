"""``imagine-bot run``: the main job.

Order matters: settings and preflight first (a clear message instead of a traceback), then the
store, the model (in a thread; minutes on first download), the worker, and only then Discord,
so that the bot never accepts a prompt it cannot serve. SIGTERM/SIGINT stop it gracefully: the
running job finishes and is delivered, queued jobs stay in the store for the next start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal

from core.config import Settings, load_settings
from core.errors import UserInputError
from moderation.readiness import require_all

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the Discord bot (the main job)")
    p.add_argument(
        "--no-sync",
        action="store_true",
        help="do not sync slash commands at start (they are already registered)",
    )
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    asyncio.run(run(settings, sync_commands=not args.no_sync))
    return 0


def settle_heap() -> None:
    """Move everything loaded so far (the model, torch, transformers: millions of objects) out of
    the garbage collector's reach. Otherwise a burst of interactions allocates enough to trigger
    full collections that walk all of it, each pausing the event loop (and every ack) for up
    to a second."""
    gc.collect()
    gc.freeze()


def make_postprocess(settings: Settings, store: object):
    """Moderation, watermark and provenance after generation (``moderation/postprocess.py``).
    No fallback: a bot that cannot moderate does not start (``moderation/readiness.py``)."""
    from moderation.postprocess import make_postprocess as factory

    return factory(settings, store)


async def run(settings: Settings, *, sync_commands: bool = True) -> None:
    from bot.client import start_bot, stop_bot
    from bot.doctor import preflight
    from bot.services import Services
    from core.logging_setup import setup_logging
    from core.metrics import start_metrics_server
    from core.private_files import private_umask, secure_data_dir
    from core.store import Store
    from generation.engine import Engine
    from generation.worker import Worker

    private_umask()  # everything the bot writes is owner-only, whatever the admin's umask
    token = settings.discord_token()
    setup_logging(settings, extra_secrets=[token] if token else [])
    preflight(settings)
    secure_data_dir(settings)  # and what an older version or a restore left readable
    if not token:
        raise UserInputError("no Discord bot token: set DISCORD_TOKEN or discord.token_file")
    # Fail closed: NudeNet, the watermark and the gate must work before anything is accepted.
    await asyncio.to_thread(require_all, settings)
    store = await Store.open(settings.db_path)
    metrics = None
    bot = None
    try:
        log.info("loading model %s", settings.model.name)
        engine = await asyncio.to_thread(Engine.load, settings)
        if settings.queue.backend == "redis":  # GPUs elsewhere: `imagine-bot worker` processes
            from generation.remote.dispatcher import RemoteWorker as Worker
        worker = Worker(store, engine, settings, postprocess=make_postprocess(settings, store))
        metrics = await start_metrics_server(settings)
        services = Services(settings=settings, store=store, engine=engine, worker=worker)
        bot = await start_bot(services, sync_commands=sync_commands, timeout=120)
        settle_heap()
        log.info("ready as %s", bot.user)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({stopper, bot.runner_task}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        log.info("stopping: finishing the running job; queued jobs stay queued")
    finally:
        if bot is not None:
            await stop_bot(bot)
        if metrics is not None:
            await metrics.stop()
        await store.close()
