"""``imagine-bot playground``: the real bot against the built-in Discord stand-in, in a browser.

Same code path as ``imagine-bot run`` (``bot.runner.run``: preflight, fail-closed moderation,
store, model, worker, delivery); only Discord is replaced, by ``playground.emulator`` on a
loopback port. The page is served on 127.0.0.1 and nothing leaves the machine; all state lives
in the playground's own data directory, so trying a policy never touches a real server's.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import errno
from pathlib import Path

from aiohttp import web
from pydantic import SecretStr

from bot import runner as bot_runner
from core.config import Settings, load_settings
from core.errors import UserInputError
from playground.emulator import Emulator
from playground.web import make_app

# Shaped like a real bot token (base64 id . timestamp . hmac) so preflight's check holds; it
# only ever reaches the loopback stand-in.
PLAYGROUND_TOKEN = (
    base64.urlsafe_b64encode(b"100000000000000001").decode().rstrip("=") + ".Playgr." + "p" * 38
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "playground",
        help="the whole bot in a browser, no Discord account needed (local Discord stand-in)",
    )
    p.add_argument("--model", help="model to load (default: model.name; 'tiny' works offline)")
    p.add_argument("--port", type=int, default=8080, help="web page port on 127.0.0.1 (8080)")
    p.add_argument(
        "--data-dir",
        type=Path,
        help="the playground's own data directory (default: <data_dir>/playground)",
    )
    p.set_defaults(handler=_main)


def _main(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise UserInputError(f"--port {args.port} is not a port number (0-65535)")
    settings = load_settings(args.config)
    asyncio.run(serve(playground_settings(settings, args.model, args.data_dir), args.port))
    return 0


def playground_settings(settings: Settings, model: str | None, data_dir: Path | None) -> Settings:
    """The admin's settings with the playground's model and its own data directory."""
    update: dict[str, object] = {"data_dir": data_dir or settings.data_dir / "playground"}
    if model:
        update["model"] = settings.model.model_copy(update={"name": model})
    return settings.model_copy(update=update)


async def serve(settings: Settings, port: int, host: str = "127.0.0.1") -> None:
    """Start the stand-in and the page, print the address, then run the bot until Ctrl-C."""
    emu = Emulator(token=PLAYGROUND_TOKEN, bot_name="imagine-bot")
    emu.guild.name = "Playground"
    await emu.start()
    page = web.AppRunner(make_app(emu), access_log=None, handle_signals=False)
    await page.setup()
    try:
        try:
            site = web.TCPSite(page, host, port)
            await site.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserInputError(f"port {port} is in use; pick another with --port") from None
            raise UserInputError(
                f"cannot serve the page on {host}:{port}: {exc.strerror}"
            ) from None
        bound = page.addresses[0][1]  # the port the OS chose for --port 0
        print(
            f"imagine-bot playground: open http://{host}:{bound}/ "
            f"(model {settings.model.name}; data in {settings.data_dir}; Ctrl-C stops)",
            flush=True,
        )
        discord = settings.discord.model_copy(
            update={
                "token": SecretStr(PLAYGROUND_TOKEN),
                "api_base": emu.api_base,
                "gateway_url": emu.gateway_url,
                "dev_guilds": [emu.guild.id],  # commands appear at once
            }
        )
        try:
            await bot_runner.run(settings.model_copy(update={"discord": discord}))
        except UserInputError as exc:
            if settings.model.name == "tiny":
                raise
            raise UserInputError(
                f"{exc}\nOffline? `imagine-bot playground --model tiny` runs the built-in test "
                "model (noise, not pictures) with everything else real."
            ) from None
    finally:
        await page.cleanup()
        await emu.stop()
