"""Zoom Out, Pan and Vary (Region) under a single image: who pressed, which edit, which form.

The job itself is made by the imagine cog's ``derive`` (same checks, gate, caps and submit as a
variation); this cog only decides whether a form comes first (Custom Zoom, a region's prompt, or
the presser's remix mode) and lists the regions one can pick.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot import derive
from bot.access import require_access
from bot.edit_views import (
    EDIT_COG,
    PAN,
    REGION_PRESETS,
    ZOOM_LABELS,
    EditModal,
    box_op,
    canvas_of,
    region_view,
    zoom_op,
)
from bot.press import HANDLER_COG
from bot.replies import reply_error
from core.errors import UserInputError
from core.jobs import JobStatus

if TYPE_CHECKING:
    from PIL import Image

    from bot.client import ImagineBot
    from bot.cogs.imagine import ImagineCog

FACE_SCORE = 0.4  # NudeNet's face score from which a face is offered as a region
BOX_MARGIN = 0.25  # a face's box grown by this share each way: hair and chin change with it
MAX_FACES = 4


class EditCog(commands.Cog, name=EDIT_COG):
    """The press handlers of ``bot/edit_views.py`` (found by name, so views need no cog)."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        self.store = bot.services.store

    @property
    def _imagine(self) -> ImagineCog:
        return self.bot.get_cog(HANDLER_COG)  # type: ignore[return-value]

    async def edit(self, interaction: discord.Interaction, job_id: str, index: int, op: str) -> None:
        """A Zoom Out or Pan press: queued at once, or a form first (Custom Zoom, remix mode)."""
        defaults = await self.bot.user_settings.get(interaction.user.id)
        if op == "zc" or defaults.remix:
            await self._open_form(interaction, job_id, index, op)
            return
        kind, canvas = canvas_of(op)
        await self._imagine.derive(interaction, job_id, kind, index=index, canvas=canvas)

    async def open_region(self, interaction: discord.Interaction, job_id: str, index: int) -> None:
        """The region picker, shown only to the presser (who may then need a form)."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        submitter = self.bot.submitter
        try:
            parent = await derive.usable_parent(
                submitter, interaction, await self.store.get_job(job_id), job_id
            )
            image = await derive.parent_image(submitter, parent, index)
        except UserInputError as exc:
            await interaction.followup.send(str(exc), ephemeral=True)
            return
        regions = await asyncio.to_thread(region_choices, image)
        await interaction.followup.send(
            "Which part of the image should change? You then say what goes there.",
            view=region_view(job_id, index, regions),
            ephemeral=True,
        )

    async def region_chosen(
        self, interaction: discord.Interaction, job_id: str, index: int, op: str
    ) -> None:
        if not op.startswith("b"):
            await interaction.response.send_message("pick a region from the list", ephemeral=True)
            return
        await self._open_form(interaction, job_id, index, op)

    async def _open_form(
        self, interaction: discord.Interaction, job_id: str, index: int, op: str
    ) -> None:
        """The edit's prompt form, filled in with the job's prompt (only for those who may see
        it)."""
        parent = await self.store.get_job(job_id)
        try:
            if parent is None or parent.delivery.get("deleted") or parent.status != JobStatus.DONE:
                raise UserInputError(
                    f"job {job_id} was deleted or has no images, so it cannot be edited"
                )
            require_access(parent, interaction)  # the form shows the job's prompt
        except UserInputError as exc:
            await interaction.response.send_message(str(exc), ephemeral=True)
            return
        prompt = derive.remix_prompt(parent) + (" --zoom 2" if op == "zc" else "")
        await interaction.response.send_modal(
            EditModal(job_id, index, op, prompt, opened_by=interaction.id, title=form_title(op))
        )

    async def edit_submitted(
        self, interaction: discord.Interaction, job_id: str, index: int, op: str, text: str
    ) -> None:
        parent = await self.store.get_job(job_id)
        private = bool(parent and parent.delivery.get("private"))
        try:
            await self.bot.acceptor.accept(interaction, ephemeral=private, press=True)
            if op == "zc":
                text, op = zoom_op(text)
            kind, canvas = canvas_of(op)
            await self._imagine.derive(
                interaction, job_id, kind, index=index, canvas=canvas, prompt=text, deferred=True
            )
        except UserInputError as exc:
            await reply_error(interaction, str(exc), self.bot.acceptor)


def form_title(op: str) -> str:
    if op in ZOOM_LABELS:
        return ZOOM_LABELS[op]
    if op in PAN:
        return f"Pan {PAN[op]}"
    return "Vary (Region)"


def region_choices(image: Image.Image) -> dict[str, str]:
    """The regions one can pick: halves and centre, then each face and the person NudeNet
    finds (label -> region op)."""
    from moderation.nsfw import FACE_LABELS, NsfwDetector

    choices = {label: box_op(box) for label, box in REGION_PRESETS.items()}
    scan = NsfwDetector.get().scan(image)
    faces = [d for d in scan.detections if d.label in FACE_LABELS and d.score >= FACE_SCORE]
    for n, face in enumerate(faces[:MAX_FACES], start=1):
        choices[f"Face {n}" if len(faces) > 1 else "Face"] = box_op(
            _fractions(face.box, image.size, BOX_MARGIN)
        )
    parts = [d.box for d in scan.detections if d.score >= FACE_SCORE]
    if len(parts) >= 2:
        left = min(x for x, _, _, _ in parts)
        top = min(y for _, y, _, _ in parts)
        right = max(x + w for x, _, w, _ in parts)
        bottom = max(y + h for _, y, _, h in parts)
        choices["Person"] = box_op(
            _fractions((left, top, right - left, bottom - top), image.size, 0.1)
        )
    return choices


def _fractions(
    box: tuple[int, int, int, int], size: tuple[int, int], margin: float
) -> tuple[float, float, float, float]:
    """A pixel box (x, y, w, h) grown by ``margin`` each way, as fractions of the image."""
    x, y, w, h = box
    width, height = size
    x0, y0 = max(0.0, x - w * margin), max(0.0, y - h * margin)
    x1, y1 = min(width, x + w * (1 + margin)), min(height, y + h * (1 + margin))
    return x0 / width, y0 / height, x1 / width, y1 / height


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(EditCog(bot))

