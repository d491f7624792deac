"""Commands about your own jobs and defaults: /queue, /cancel, /settings, /show, /help, /stats."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import info
from bot.cogs.imagine import ASPECT_CHOICES, STYLE_CHOICES
from bot.params import known_parameters
from core.errors import UserInputError
from core.jobs import JobStatus

if TYPE_CHECKING:
    from bot.client import ImagineBot

HELP = """**/imagine** `prompt` makes four images. Add Midjourney-style parameters to the prompt:
`--ar 16:9` shape, `--seed 42` repeatable, `--no trees` leave out, `--q .5|1|2` quality,
`--s 0-1000` stylize, `--steps N`, `--count 1-4`, `--style NAME`, `--tile` seamless,
`--chaos 0-100` varied. `a {{red, blue}} car` queues one job per colour; `a cat::2 a dog::1` mixes.
Known parameters: {known}

Under a result: **U1-U4** upscale an image, **V1-V4** vary it (subtle; the second row is strong),
\N{CLOCKWISE RIGHTWARDS AND LEFTWARDS OPEN CIRCLE ARROWS} reroll, **Remix** edits the prompt first,
\N{WASTEBASKET} deletes (author or moderator). Anyone in the channel may press them unless the
server restricts it. Reactions work too: \N{CLOCKWISE RIGHTWARDS AND LEFTWARDS OPEN CIRCLE ARROWS} reroll,
\N{UPWARDS BLACK ARROW} upscale image 1, \N{ARTIST PALETTE} vary image 1.
Under a single image: **Zoom Out 2x / 1.5x / Custom Zoom**, pan \N{LEFTWARDS BLACK ARROW} \N{BLACK RIGHTWARDS ARROW} \N{UPWARDS BLACK ARROW} \N{DOWNWARDS BLACK ARROW}
(extend the canvas), **Vary (Region)** (repaint a part you pick).

**/describe** `image` suggests four prompts for a picture; its buttons 1-4 run one as /imagine.

**/queue** your jobs, **/cancel** one, **/settings** your defaults, **/show** `job` re-post a result,
**/stats** what the GPU has done, **/provenance** `image` who made an image,
**/blend** 2-5 images into new ones."""


class UserCog(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        self.store = bot.services.store

    @app_commands.command(
        name="queue", description="Your jobs, their positions and the queue length"
    )
    async def queue(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(
            await info.queue_report(self.store, self.bot.services.worker, interaction.user.id),
            ephemeral=True,
        )

    @app_commands.command(name="cancel", description="Cancel a queued or running job")
    @app_commands.describe(job="Job id (default: your newest job)")
    async def cancel(self, interaction: discord.Interaction, job: str | None = None) -> None:
        await interaction.response.send_message(
            await self._cancel(interaction, job), ephemeral=True
        )

    async def _cancel(self, interaction: discord.Interaction, job_id: str | None) -> str:
        worker = self.bot.services.worker
        if job_id is None:
            mine = await self.store.jobs_for_user(
                interaction.user.id, statuses=[JobStatus.QUEUED, JobStatus.RUNNING], limit=1
            )
            if not mine:
                return "you have no queued or running jobs"
            job_id = mine[0].id
        job_id = job_id.strip().lower()
        try:
            cancelled = await worker.cancel(job_id, user_id=interaction.user.id)
        except UserInputError as exc:
            return str(exc)
        if not cancelled:
            return f"job `{job_id}` is already finished (or being saved) and cannot be cancelled"
        job = await self.store.get_job(job_id)
        if job is not None:
            progress = self.bot.progress
            await progress.settle(job_id)
            progress.update(job, f"Cancelled by <@{interaction.user.id}>.", force=True)
        return f"job `{job_id}` cancelled"

    @app_commands.command(name="settings", description="Your defaults for /imagine")
    @app_commands.describe(
        aspect_ratio="Default shape",
        private="Reply privately by default",
        style="Default style",
        remix="Remix mode: Zoom Out and Pan ask for the prompt first",
    )
    @app_commands.choices(aspect_ratio=ASPECT_CHOICES, style=STYLE_CHOICES)
    async def settings(
        self,
        interaction: discord.Interaction,
        aspect_ratio: str | None = None,
        private: bool | None = None,
        style: str | None = None,
        remix: bool | None = None,
    ) -> None:
        await interaction.response.send_message(
            await self._update_settings(
                interaction.user.id,
                aspect_ratio=aspect_ratio,
                private=private,
                style=style,
                remix=remix,
            ),
            ephemeral=True,
        )

    async def _update_settings(self, user_id: int, **changes: Any) -> str:
        """Options given change the defaults; the answer shows them all."""
        user_settings = self.bot.user_settings
        updates = {k: v for k, v in changes.items() if v is not None}
        if updates:
            current = await user_settings.update(user_id, **updates)
        else:
            current = await user_settings.get(user_id)
        return (
            f"Your defaults: aspect ratio **{current.aspect_ratio or 'model default'}**, "
            f"private replies **{'on' if current.private else 'off'}**, "
            f"style **{current.style or 'none'}**, "
            f"remix mode **{'on' if current.remix else 'off'}**."
            + ("" if updates else " Set them with the options of /settings.")
        )

    @app_commands.command(
        name="show", description="Post a finished job's result again, with buttons"
    )
    @app_commands.describe(job="Job id (shown under every result)")
    async def show(self, interaction: discord.Interaction, job: str) -> None:
        await info.show(self.store, self.bot.acceptor, interaction, job)

    @app_commands.command(name="help", description="How to use imagine-bot")
    async def help(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(
            HELP.format(known=known_parameters()), ephemeral=True
        )

    @app_commands.command(name="stats", description="Images made, the queue, the GPU and energy")
    async def stats(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(
            await info.stats_text(self.store, self.bot.services.worker, interaction.guild_id),
            ephemeral=True,
        )


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(UserCog(bot))
