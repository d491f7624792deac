"""The discord.py client: cogs, persistent buttons, the app-command error handler, and a way to
start and stop it in-process (tests run it against the loopback emulator, then start a new one
on the same store to prove that nothing is lost across a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

import discord
import yarl
from discord import app_commands
from discord.ext import commands

from generation import metrics
from generation.errors import UserInputError

if TYPE_CHECKING:
    from bot.services import Services

log = logging.getLogger(__name__)

COGS = ("bot.cogs.imagine", "bot.cogs.user", "bot.cogs.policy")


def point_at(api_base: str | None, gateway_url: str | None) -> None:
    """Aim discord.py at another Discord (the test emulator). Undocumented class attributes:
    the discord.py range is pinned in pyproject.toml and a canary test checks they exist."""
    if api_base:
        discord.http.Route.BASE = api_base.rstrip("/")
    if gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


def intents() -> discord.Intents:
    """Only what the bot reads: guilds (channels, nsfw flags) and reactions (shortcuts).
    No message content and no member list, so no privileged intents to request."""
    value = discord.Intents.none()
    value.guilds = True
    value.guild_reactions = True
    return value


class ImagineBot(commands.Bot):
    """The bot. ``services`` holds the store, engine, worker and moderation it works with."""

    def __init__(self, services: Services, *, sync_commands: bool = True) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents(),
            help_command=None,
            allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=True),
            http_trace=metrics.discord_http_trace(),  # failed Discord API calls -> metrics
        )
        metrics.watch_gateway(self)  # /healthz follows the gateway connection
        self.services = services
        self.sync_commands = sync_commands
        from bot.actions import Actions

        self.actions = Actions(self, services)
        self.actions.acceptor.attach(self)  # raw interaction payloads, recorded before the ack
        self.tree.on_error = self.on_app_command_error
        self.runner_task: asyncio.Task[None] | None = None
        self.background: list[asyncio.Task[None]] = []  # e.g. the retention sweep

    async def setup_hook(self) -> None:
        from bot.views import DYNAMIC_ITEMS

        self.add_dynamic_items(*DYNAMIC_ITEMS)
        for name in COGS:
            await self.load_extension(name)
        if self.sync_commands:
            await self.sync_app_commands()
        await self.actions.start()

    async def sync_app_commands(self) -> None:
        """Dev guilds get the commands instantly; global sync can take up to an hour to show."""
        guilds = self.services.settings.discord.dev_guilds
        if guilds:
            for guild_id in guilds:
                guild = discord.Object(guild_id)
                self.tree.copy_global_to(guild=guild)
                synced = await self.tree.sync(guild=guild)
                log.info("synced %d commands to guild %s", len(synced), guild_id)
        else:
            synced = await self.tree.sync()
            log.info("synced %d global commands", len(synced))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.actions.stop()
        await super().close()

    async def on_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """Users see a short ephemeral message, never "This interaction failed"."""
        original = getattr(error, "original", error)
        if isinstance(original, UserInputError):
            message = str(original)
        elif isinstance(error, app_commands.CheckFailure):
            message = str(error) or "you are not allowed to use this command here"
        else:
            log.exception(
                "command %s failed",
                interaction.command and interaction.command.qualified_name,
                exc_info=original,
            )
            message = "Something went wrong on our side; the error was logged for the admins."
        await self.actions.reply_error(interaction, message)


async def start_bot(
    services: Services,
    *,
    sync_commands: bool = True,
    start_worker: bool = True,
    timeout: float = 30,
) -> ImagineBot:
    """Log in, wait until ready, then start the worker (which re-offers undelivered results).

    Stop with ``await stop_bot(bot)``; a new bot can then be started on the same store.
    """
    settings = services.settings
    point_at(settings.discord.api_base, settings.discord.gateway_url)
    token = settings.discord_token()
    if not token:
        raise UserInputError(
            "no Discord bot token: set DISCORD_TOKEN, discord.token_file or IMAGINE_DISCORD__TOKEN"
        )
    bot = ImagineBot(services, sync_commands=sync_commands)
    runner = asyncio.create_task(bot.start(token), name="discord-client")
    bot.runner_task = runner
    ready = asyncio.create_task(bot.wait_until_ready())
    done, _ = await asyncio.wait(
        {runner, ready}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
    )
    if ready not in done:
        ready.cancel()
        await bot.close()
        if runner.done() and runner.exception() is not None:
            exc = runner.exception()
            if isinstance(exc, discord.LoginFailure):
                raise UserInputError(
                    "Discord refused the bot token (check DISCORD_TOKEN)"
                ) from None
            raise exc  # type: ignore[misc]
        raise TimeoutError(f"the Discord client was not ready within {timeout:g} s")
    if start_worker and services.worker is not None:
        await services.worker.start()
        # Interactions acknowledged before a crash but never turned into a job: finish them.
        await bot.actions.acceptor.recover(bot)
    from generation import retention

    bot.background.append(
        asyncio.create_task(retention.run(services.store, settings), name="retention")
    )
    return bot


async def stop_bot(bot: ImagineBot, *, finish_running: bool = True) -> None:
    """Graceful stop: the worker finishes (or re-queues) its running job and delivers it, then
    the client disconnects. Queued jobs stay in the store for the next start."""
    for task in bot.background:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    worker = bot.services.worker
    if worker is not None:
        await worker.stop(finish_running=finish_running)
    await bot.close()
    runner = getattr(bot, "runner_task", None)
    if runner is not None:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await runner


def interaction_delivery(interaction: discord.Interaction, **extra: Any) -> dict[str, Any]:
    """What delivery needs to answer through this interaction later, even after a restart."""
    extras = getattr(interaction, "extras", None) or {}
    data: dict[str, Any] = {
        "application_id": interaction.application_id,
        "token": interaction.token,
        # Local clock (immune to skew in the snowflake); when it was first accepted, if replayed.
        "created_at": extras.get("accepted_at") or time.time(),
        "filesize_limit": interaction.filesize_limit,
    }
    if extras.get("accepted"):
        data["interaction_id"] = interaction.id  # the job replaces its accepted record
    data.update(extra)
    return data
