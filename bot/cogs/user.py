"""Commands about your own jobs and defaults: /queue, /cancel, /settings, /show, /help, /stats."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs.imagine import ASPECT_CHOICES, STYLE_CHOICES
from bot.params import known_parameters

if TYPE_CHECKING:
    from bot.client import ImagineBot

HELP = """**/imagine** `prompt` makes four images. Add Midjourney-style parameters to the prompt:
`--ar 16:9` shape, `--seed 42` repeatable, `--no trees` leave out, `--q .5|1|2` quality,
`--s 0-1000` stylize, `--steps N`, `--count 1-4`, `--style NAME`.
Known parameters: {known}

Under a result: **U1-U4** upscale an image, **V1-V4** vary it (subtle; the second row is strong),
\N{CLOCKWISE RIGHTWARDS AND LEFTWARDS OPEN CIRCLE ARROWS} reroll, **Remix** edits the prompt first,
\N{WASTEBASKET} deletes (author or moderator). Anyone in the channel may press them unless the
server restricts it. Reactions work too: \N{CLOCKWISE RIGHTWARDS AND LEFTWARDS OPEN CIRCLE ARROWS} reroll,
\N{UPWARDS BLACK ARROW} upscale image 1, \N{ARTIST PALETTE} vary image 1.

**/queue** your jobs, **/cancel** one, **/settings** your defaults, **/show** `job` re-post a result,
**/stats** what the GPU has done, **/provenance** `image` who made an image."""


class UserCog(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(
        name="queue", description="Your jobs, their positions and the queue length"
    )
    async def queue(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(
            await self.bot.actions.queue_text(interaction.user.id), ephemeral=True
        )

    @app_commands.command(name="cancel", description="Cancel a queued or running job")
    @app_commands.describe(job="Job id (default: your newest job)")
    async def cancel(self, interaction: discord.Interaction, job: str | None = None) -> None:
        await interaction.response.send_message(
            await self.bot.actions.cancel(interaction, job), ephemeral=True
        )

    @app_commands.command(name="settings", description="Your defaults for /imagine")
    @app_commands.describe(
        aspect_ratio="Default shape", private="Reply privately by default", style="Default style"
    )
    @app_commands.choices(aspect_ratio=ASPECT_CHOICES, style=STYLE_CHOICES)
    async def settings(
        self,
        interaction: discord.Interaction,
        aspect_ratio: str | None = None,
        private: bool | None = None,
        style: str | None = None,
    ) -> None:
        await interaction.response.send_message(
            await self.bot.actions.update_user_settings(
                interaction.user.id, aspect_ratio=aspect_ratio, private=private, style=style
            ),
            ephemeral=True,
        )

    @app_commands.command(
        name="show", description="Post a finished job's result again, with buttons"
    )
    @app_commands.describe(job="Job id (shown under every result)")
    async def show(self, interaction: discord.Interaction, job: str) -> None:
        await self.bot.actions.show(interaction, job)

    @app_commands.command(name="help", description="How to use imagine-bot")
    async def help(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(
            HELP.format(known=known_parameters()), ephemeral=True
        )

    @app_commands.command(name="stats", description="Images made, the queue, the GPU and energy")
    async def stats(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(
            await self.bot.actions.stats_text(interaction.guild_id), ephemeral=True
        )


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(UserCog(bot))
