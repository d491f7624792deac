"""The discord.py client: the parts every cog shares (settings stores, acceptance, submit,
delivery, progress, the worker's listener), cogs, persistent buttons, the app-command error
handler, and a way to start and stop it in-process (tests run it against the loopback
emulator, then start a new one on the same store to prove that nothing is lost across a
restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bot import discord_metrics
from bot.accept import Acceptor
from bot.delivery import Delivery
from bot.listener import ResultListener
from bot.progress import ProgressEditor
from bot.replies import GENERIC_ERROR, reply_error
from bot.settings_store import GuildSettingsStore, UserSettingsStore
from bot.submit import Submitter
from bot.views import DYNAMIC_ITEMS
from core import retention
from core.errors import UserInputError
from generation.admission import RateLimiter

if TYPE_CHECKING:
    from bot.services import Services

log = logging.getLogger(__name__)

COGS = (
    "bot.cogs.imagine",
    "bot.cogs.edit",
    "bot.cogs.blend",
    "bot.cogs.describe",
    "bot.cogs.user",
    "bot.cogs.policy",
)


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
    """The bot. ``services`` holds the store, engine, worker and moderation it works with; the
    attributes made here are what the cogs share."""

    def __init__(self, services: Services, *, sync_commands: bool = True) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents(),
            help_command=None,
            allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=True),
            http_trace=discord_metrics.discord_http_trace(),  # failed Discord API calls -> metrics
        )
        discord_metrics.watch_gateway(self)  # /healthz follows the gateway connection
        self.services = services
        self.sync_commands = sync_commands
        settings = services.settings
        self.user_settings = UserSettingsStore(services.store)
        self.guild_settings = GuildSettingsStore(services.store)
        self.acceptor = Acceptor(services, self.guild_settings)  # rate limit, cap, record, ack
        self.acceptor.attach(self)  # raw interaction payloads, recorded before the ack
        self.submitter = Submitter(
            self,
            services,
            acceptor=self.acceptor,
            guild_settings=self.guild_settings,
            user_settings=self.user_settings,
        )
        self.delivery = Delivery(
            self,
            services.store,
            attempts=settings.discord.delivery_attempts,
            backoff_s=settings.discord.delivery_backoff_s,
        )
        self.progress = ProgressEditor(self, settings.discord.progress_interval_s)
        self.listener = ResultListener(services.store, settings, self.delivery, self.progress)
        self.lookups = RateLimiter(settings.discord.lookups_per_minute, 60.0)  # /provenance
        self.tree.on_error = self.on_app_command_error
        self.runner_task: asyncio.Task[None] | None = None
        self.background: list[asyncio.Task[None]] = []  # e.g. the retention sweep

    async def setup_hook(self) -> None:
        self.add_dynamic_items(*DYNAMIC_ITEMS)
        for name in COGS:
            await self.load_extension(name)
        if self.sync_commands:
            await self.sync_app_commands()
        await self.user_settings.preload()
        worker = self.services.worker
        if worker is not None:
            worker.listener = self.listener  # it then re-offers undelivered jobs to us

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
            await self.progress.close()
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
            message = GENERIC_ERROR
        await reply_error(interaction, message, self.acceptor)


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
        await bot.acceptor.recover(bot)
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

