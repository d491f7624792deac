"""``/describe``: four prompt suggestions for an uploaded picture, each a button to /imagine it.

The caption model is ``generation/describe.py``'s, run on the worker's device between batches
(``Worker.run_between_jobs``). Every suggestion passes the same prompt gate as /imagine under
the channel's policy before anyone sees it, and again when its button is pressed (the policy may
have changed since). The upload is decoded in memory and dropped once captioned: only the
suggestions are stored (``core/store_describe.py``), for the buttons.
"""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import gate
from bot.describe_view import DESCRIBE_COG, describe_view
from bot.replies import reply_error
from bot.uploads import read_upload
from core.errors import UserInputError
from generation.describe import LazyCaptioner

if TYPE_CHECKING:
    from bot.client import ImagineBot

WITHHELD = "(a suggestion was withheld by moderation)"


class DescribeCog(commands.Cog, name=DESCRIBE_COG):
    """/describe and its suggestion buttons (``bot/describe_view.py`` calls ``press``)."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        self.store = bot.services.store
        settings = bot.services.settings
        self.captioner = LazyCaptioner(
            settings.model.captioner, cache_dir=settings.model.cache_dir
        )

    @app_commands.command(name="describe", description="Four prompt ideas for a picture")
    @app_commands.describe(
        image="The picture to describe (it is not kept)",
        private="Only you see the suggestions",
    )
    async def describe(
        self,
        interaction: discord.Interaction,
        image: discord.Attachment,
        private: bool | None = None,
    ) -> None:
        await self.run(interaction, image, private)

    async def run(
        self,
        interaction: discord.Interaction,
        image: discord.Attachment | None,
        private: bool | None = None,
    ) -> None:
        """/describe, also when replayed after a restart (``bot/accept.py``)."""
        acceptor = self.bot.acceptor
        try:
            self.captioner.check_enabled()
            if private is None:
                private = (await self.bot.user_settings.get(interaction.user.id)).private
            await acceptor.accept(interaction, ephemeral=private)
            if image is None:
                raise UserInputError("attach the picture to describe")
            picture = await read_upload(image, self.bot.services.settings)
            # Loaded (a first use may download) beside the worker, then run on its turn.
            await asyncio.to_thread(self.captioner.get)
            engine = self.bot.services.engine
            suggest = functools.partial(
                self.captioner.suggest,
                picture,
                getattr(engine, "device", "cpu"),
                getattr(engine, "dtype", None),
            )
            suggestions = await self.bot.services.worker.run_between_jobs(suggest)
            del picture, suggest  # the upload goes now; only the text stays
            shown = [await self._gated(interaction, s) for s in suggestions]
            row = await self.store.add_describe(
                user_id=interaction.user.id,
                guild_id=interaction.guild_id,
                channel_id=interaction.channel_id,
                suggestions=shown,
            )
            await interaction.edit_original_response(
                content=describe_text(shown), view=describe_view(row.id, shown)
            )
            await acceptor.answered(interaction)  # nothing left to replay; the cap slot is free
        except UserInputError as exc:
            await reply_error(interaction, str(exc), acceptor)

    async def _gated(self, interaction: discord.Interaction, suggestion: str) -> str | None:
        """The suggestion, or None when the channel's policy refuses it (logged and posted to
        the moderators like any refused prompt)."""
        submitter = self.bot.submitter
        try:
            kwargs = submitter.parse(suggestion).request_kwargs()
            await submitter.gate(interaction, kwargs["prompt"])
        except UserInputError:
            return None
        return suggestion

    async def press(self, interaction: discord.Interaction, describe_id: str, index: int) -> None:
        """Button ``index``: /imagine with that suggestion, for whoever pressed."""
        try:
            prompt = await self._usable(interaction, describe_id, index)
        except UserInputError as exc:
            await reply_error(interaction, str(exc), self.bot.acceptor)
            return
        await self.bot.submitter.imagine(interaction, prompt, press=True)

    async def _usable(self, interaction: discord.Interaction, describe_id: str, index: int) -> str:
        row = await self.store.get_describe(describe_id)
        if row is None or not 0 <= index < len(row.suggestions):
            raise UserInputError(
                "these suggestions are no longer available (expired or removed); "
                "run /describe again"
            )
        prompt = row.suggestions[index]
        if prompt is None:
            raise UserInputError("that suggestion was withheld by moderation")
        if interaction.user.id != row.user_id:
            policy = await gate.policy_for(
                self.store, self.bot.services.settings, row.guild_id, row.channel_id
            )
            if not policy.others_can_press_buttons:
                raise UserInputError(
                    "on this server only the person who ran /describe can press its buttons"
                )
        return prompt


def describe_text(suggestions: list[str | None]) -> str:
    """The answer: numbered suggestions, the buttons below run them."""
    lines = ["**Prompt ideas for your picture** (press a number to /imagine it):"]
    for number, suggestion in enumerate(suggestions, start=1):
        lines.append(f"**{number}.** {suggestion if suggestion is not None else WITHHELD}")
    return "\n".join(lines)[:2000]


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(DescribeCog(bot))
