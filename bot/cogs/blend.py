"""``/blend``: 2-5 uploaded images mixed into new ones (content and style), Midjourney's /blend.

The images steer the model through an IP-Adapter (``generation/blend.py``); the job then takes
the same path as /imagine: defer, uploads read safely, the prompt and every image gated (a photo
of a real person is checked as for /imagine's image), caps, queue, watermark, delivery. Without
a configured adapter the command says how to enable it, before anything is queued.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs.imagine import ASPECT_CHOICES
from bot.params import parse_aspect_ratio
from bot.replies import reply_error
from bot.uploads import read_upload
from core.errors import UserInputError
from generation.blend import ENABLE_HINT, check_count
from generation.request import GenerationRequest

if TYPE_CHECKING:
    from bot.client import ImagineBot

# What the text encoder reads when the user gives no words: the images lead.
BLEND_PROMPT = "a blend of the images, high quality, detailed"


class BlendCog(commands.Cog, name="Blend"):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="blend", description="Blend 2-5 images into new ones")
    @app_commands.describe(
        image1="First image",
        image2="Second image",
        image3="Third image (optional)",
        image4="Fourth image (optional)",
        image5="Fifth image (optional)",
        prompt="Words to steer the blend, with --parameters (optional)",
        aspect_ratio="Shape of the result",
        private="Only you see the result",
    )
    @app_commands.choices(aspect_ratio=ASPECT_CHOICES)
    async def blend(
        self,
        interaction: discord.Interaction,
        image1: discord.Attachment,
        image2: discord.Attachment,
        image3: discord.Attachment | None = None,
        image4: discord.Attachment | None = None,
        image5: discord.Attachment | None = None,
        prompt: app_commands.Range[str, 1, 1000] | None = None,
        aspect_ratio: str | None = None,
        private: bool | None = None,
    ) -> None:
        uploads = [a for a in (image1, image2, image3, image4, image5) if a is not None]
        submitter = self.bot.submitter
        defaults = await self.bot.user_settings.get(interaction.user.id)
        private = defaults.private if private is None else private
        try:
            if not (self.bot.services.settings.model.ip_adapter or "").strip():
                raise UserInputError(ENABLE_HINT)  # before the defer: nothing to recover
            await self.bot.acceptor.accept(interaction, ephemeral=private)
            check_count(len(uploads))
            settings = self.bot.services.settings
            images = [await read_upload(upload, settings) for upload in uploads]
            params = submitter.parse(prompt or BLEND_PROMPT)
            if aspect_ratio and params.aspect_ratio is None:
                params = replace(params, aspect_ratio=parse_aspect_ratio(aspect_ratio))
            kwargs = params.request_kwargs()
            flags = await submitter.gate(
                interaction, kwargs["prompt"], images, negative=kwargs["negative_prompt"]
            )
            request = GenerationRequest(**kwargs, kind="blend", references=tuple(images))
            await submitter.submit(
                interaction,
                request,
                delivery={
                    "private": private,
                    "prompt": prompt and params.prompt or f"/blend of {len(images)} images",
                    "summary": params.summary(),
                    **flags,
                },
            )
        except UserInputError as exc:
            await reply_error(interaction, str(exc), self.bot.acceptor)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(BlendCog(bot))
