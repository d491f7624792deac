"""``/imagine``: the command people use, plus emoji reactions as shortcuts for the buttons."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.params import STYLES

if TYPE_CHECKING:
    from bot.client import ImagineBot

ASPECT_CHOICES = [
    app_commands.Choice(name=f"{label} ({ratio})", value=ratio)
    for label, ratio in (
        ("square", "1:1"),
        ("landscape", "3:2"),
        ("portrait", "2:3"),
        ("widescreen", "16:9"),
        ("tall", "9:16"),
        ("photo", "4:3"),
    )
]
STYLE_CHOICES = [app_commands.Choice(name=name, value=name) for name in STYLES]
QUALITY_CHOICES = [
    app_commands.Choice(name=f"{label} ({q:g}x steps)", value=q)
    for label, q in (("draft", 0.25), ("fast", 0.5), ("normal", 1.0), ("high", 2.0))
]


class ImagineCog(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="imagine", description="Turn a prompt into images")
    @app_commands.describe(
        prompt="What to draw; Midjourney parameters work too (--ar 16:9 --seed 42 --no trees)",
        image="A picture or sketch to start from",
        aspect_ratio="Shape of the image",
        seed="Same seed + same prompt = same image",
        negative="Things to leave out",
        quality="More steps = more detail, slower",
        steps="Exact number of denoising steps",
        style="A style preset",
        private="Only you see the result",
    )
    @app_commands.choices(aspect_ratio=ASPECT_CHOICES, style=STYLE_CHOICES, quality=QUALITY_CHOICES)
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 4000],
        image: discord.Attachment | None = None,
        aspect_ratio: str | None = None,
        seed: app_commands.Range[int, 0, 2**32 - 1] | None = None,
        negative: app_commands.Range[str, 1, 2000] | None = None,
        quality: float | None = None,
        steps: app_commands.Range[int, 1, 500] | None = None,
        style: str | None = None,
        private: bool | None = None,
    ) -> None:
        await self.bot.actions.imagine(
            interaction,
            prompt,
            image=image,
            aspect_ratio=aspect_ratio,
            seed=seed,
            negative=negative,
            quality=quality,
            steps=steps,
            style=style,
            private=private,
        )

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        from bot.views import handle_modal_submit

        await handle_modal_submit(interaction)

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        await self.bot.actions.reaction(payload)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(ImagineCog(bot))
