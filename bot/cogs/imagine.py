"""``/imagine``: the command people use, the buttons and the remix form under its results, and
emoji reactions as shortcuts for the buttons.

The checks and the submit are ``bot/submit.py``'s, shared by all of these; what a derived job
is made from is ``bot/derive.py``'s. This cog only says who asked, for what, and how to answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import derive
from bot.access import is_moderator, require_access
from bot.delivery import job_for_message
from bot.params import STYLES
from bot.replies import reply_error
from bot.views import HANDLER_COG, RemixModal, handle_modal_submit
from core.errors import UserInputError
from core.jobs import JobStatus

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


REROLL = "\N{CLOCKWISE RIGHTWARDS AND LEFTWARDS OPEN CIRCLE ARROWS}"
UPSCALE = "\N{UPWARDS BLACK ARROW}"
VARY = "\N{ARTIST PALETTE}"
REACTIONS = {REROLL: "reroll", UPSCALE: "upscale", UPSCALE + "\ufe0f": "upscale", VARY: "variation"}


class ImagineCog(commands.Cog, name=HANDLER_COG):
    """/imagine and everything pressed or reacted on its results (``bot/views.py`` calls the
    press handlers by name)."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        self.store = bot.services.store

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
        await self.bot.submitter.imagine(
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

    # --- buttons and the remix form (bot/views.py) -------------------------------------------

    async def derive(
        self,
        interaction: discord.Interaction,
        job_id: str,
        kind: str,
        *,
        index: int | None = None,
        strong: bool = False,
        prompt: str | None = None,
        deferred: bool = False,
        canvas: str | None = None,
    ) -> None:
        """Upscale, variation, reroll, zoom, pan or region of a finished job, charged to
        whoever pressed (``canvas``: see ``derive.derived_request``)."""
        submitter = self.bot.submitter
        parent = await self.store.get_job(job_id)
        private = bool(parent and parent.delivery.get("private"))
        try:
            if not deferred:
                await self.bot.acceptor.accept(interaction, ephemeral=private, press=True)
            parent = await derive.usable_parent(submitter, interaction, parent, job_id)
            request, extra = await derive.derived_request(
                submitter, parent, kind, index, strong, prompt, canvas
            )
            extra.update(
                await submitter.gate(
                    interaction, request.prompt, negative=request.negative_prompt, parent=parent
                )
            )
            await submitter.submit(
                interaction,
                request,
                parent=parent,
                parent_image_index=index,
                delivery={"private": private, **extra},
            )
        except UserInputError as exc:
            await reply_error(interaction, str(exc), self.bot.acceptor)

    async def open_remix(self, interaction: discord.Interaction, job_id: str) -> None:
        """The remix form, filled in with the job's prompt (only for those who may see it)."""
        parent = await self.store.get_job(job_id)
        if parent is None or parent.delivery.get("deleted") or parent.status != JobStatus.DONE:
            await interaction.response.send_message(
                f"job {job_id} was deleted or has no images, so it cannot be remixed",
                ephemeral=True,
            )
            return
        try:
            require_access(parent, interaction)  # the modal shows the job's prompt
        except UserInputError as exc:
            await interaction.response.send_message(str(exc), ephemeral=True)
            return
        count = int(parent.params.get("count") or 1)
        await interaction.response.send_modal(
            RemixModal(job_id, derive.remix_prompt(parent), count, opened_by=interaction.id)
        )

    async def remix_submitted(
        self, interaction: discord.Interaction, job_id: str, prompt: str, image_field: str
    ) -> None:
        parent = await self.store.get_job(job_id)
        private = bool(parent and parent.delivery.get("private"))
        try:
            await self.bot.acceptor.accept(interaction, ephemeral=private, press=True)
            count = int(parent.params.get("count") or 1) if parent else 1
            vary = derive.parse_vary_field(image_field, count)
            if vary is None:
                await self.derive(interaction, job_id, "reroll", prompt=prompt, deferred=True)
                return
            index, strong = vary
            await self.derive(
                interaction,
                job_id,
                "variation",
                index=index,
                strong=strong,
                prompt=prompt,
                deferred=True,
            )
        except UserInputError as exc:
            await reply_error(interaction, str(exc), self.bot.acceptor)

    async def delete(self, interaction: discord.Interaction, job_id: str) -> None:
        """Hide a result for good: its author or a moderator of its server only."""
        job = await self.store.get_job(job_id)
        if job is None:
            await interaction.response.send_message(f"there is no job {job_id}", ephemeral=True)
            return
        try:
            require_access(job, interaction)
            if interaction.user.id != job.user_id and not is_moderator(interaction):
                raise UserInputError(
                    "only the person who made this image or a moderator of its server can "
                    "delete it"
                )
        except UserInputError as exc:
            await interaction.response.send_message(str(exc), ephemeral=True)
            return
        await interaction.response.defer()
        await self.store.update_delivery(
            job_id, {"deleted": True, "deleted_by": interaction.user.id}
        )
        try:
            await interaction.delete_original_response()
        except discord.HTTPException as exc:
            await interaction.followup.send(
                f"could not delete the message ({exc.status})", ephemeral=True
            )

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        await handle_modal_submit(interaction)

    # --- reactions ------------------------------------------------------------------------------

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        """Emoji shortcuts on a result: reroll, upscale image 1, vary image 1."""
        kind = REACTIONS.get(str(payload.emoji))
        if kind is None or payload.user_id == getattr(self.bot.user, "id", None):
            return
        if payload.member is not None and payload.member.bot:
            return
        job_id = await job_for_message(self.store, payload.message_id)
        if job_id is None:
            return
        channel = self.bot.get_partial_messageable(payload.channel_id, guild_id=payload.guild_id)
        actor = ReactionActor(payload, self.bot.get_channel(payload.channel_id) or channel)
        acceptor = self.bot.acceptor
        try:
            # Rate limit and cap first: a refused reaction posts no "queued..." placeholder.
            if not acceptor.check_reaction(payload.user_id):
                return  # over the limit and already told so in this window
            await acceptor.reserve(actor)
            await self._react(actor, channel, job_id, kind)
        except UserInputError as exc:
            await channel.send(
                f"<@{payload.user_id}> {exc}",
                delete_after=30,
                allowed_mentions=discord.AllowedMentions(users=[discord.Object(payload.user_id)]),
            )
        finally:
            await acceptor.answered(actor)

    async def _react(self, actor: Any, channel: Any, job_id: str, kind: str) -> None:
        submitter = self.bot.submitter
        parent = await derive.usable_parent(
            submitter, actor, await self.store.get_job(job_id), job_id
        )
        index = 0 if kind != "reroll" else None
        request, extra = await derive.derived_request(submitter, parent, kind, index, False, None)
        extra.update(
            await submitter.gate(
                actor, request.prompt, negative=request.negative_prompt, parent=parent
            )
        )
        placeholder = await channel.send(
            f"<@{actor.user.id}> {kind} of job `{job_id}` is queued\u2026",
            allowed_mentions=discord.AllowedMentions.none(),
        )
        extra["channel_message_id"] = placeholder.id
        await submitter.submit(
            actor,
            request,
            parent=parent,
            parent_image_index=index,
            delivery={"private": False, **extra, "token": None},
        )


class ReactionActor:
    """Just enough of an ``Interaction`` for the submit and the checks, for reaction shortcuts."""

    def __init__(self, payload: discord.RawReactionActionEvent, channel: Any) -> None:
        self.user = payload.member or discord.Object(payload.user_id)
        self.guild_id = payload.guild_id
        self.channel_id = payload.channel_id
        self.channel = channel
        self.extras: dict[str, Any] = {}
        self.application_id = None
        self.token = None
        self.filesize_limit = None


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(ImagineCog(bot))
