"""The buttons under a result: upscale, variation (subtle/strong), reroll, remix, delete.

Every button is a ``DynamicItem`` whose ``custom_id`` carries the job id and image index, so a
press is understood from the id and the store alone: buttons keep working after a restart or
days later, and nothing is held in memory (the complaint users have about other bots).

custom_id scheme (all well under Discord's 100 characters)::

    ib:u:<job>:<i>        upscale image i (U1-U4)
    ib:v:<job>:<i>:<s|S>  variation of image i, s = subtle, S = strong
    ib:r:<job>            reroll (same prompt, new seeds)
    ib:m:<job>            remix (a modal to edit the prompt first)
    ib:d:<job>            delete (author or moderator)
    ib:ds:<describe>:<i>  /imagine suggestion i of a /describe (bot/describe_view.py)

Zoom Out, Pan and Vary (Region) under a single image are ``bot/edit_views.py``'s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import discord

from bot.describe_view import DescribeButton
from bot.edit_views import EDIT_ITEMS, add_edit_buttons, handle_edit_modal
from bot.press import HANDLER_COG, modal_values, run_handler

__all__ = ["HANDLER_COG", "modal_values"]  # imported from here by the cogs and accept.py

_JOB = r"(?P<job>[a-z0-9]{1,40})"
MAX_INDEX = 9


def upscale_id(job_id: str, index: int) -> str:
    return f"ib:u:{job_id}:{index}"


def variation_id(job_id: str, index: int, strong: bool) -> str:
    return f"ib:v:{job_id}:{index}:{'S' if strong else 's'}"


def reroll_id(job_id: str) -> str:
    return f"ib:r:{job_id}"  # JobButton("r", ...)


def remix_id(job_id: str) -> str:
    return f"ib:m:{job_id}"  # JobButton("m", ...)


def delete_id(job_id: str) -> str:
    return f"ib:d:{job_id}"  # JobButton("d", ...)


class UpscaleButton(
    discord.ui.DynamicItem[discord.ui.Button], template=rf"^ib:u:{_JOB}:(?P<i>\d)$"
):
    def __init__(self, job_id: str, index: int, *, row: int | None = None) -> None:
        super().__init__(
            discord.ui.Button(
                label=f"U{index + 1}",
                style=discord.ButtonStyle.secondary,
                custom_id=upscale_id(job_id, index),
                row=row,
            )
        )
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /
    ) -> UpscaleButton:
        return cls(match["job"], int(match["i"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await run_handler(interaction, "derive", self.job_id, "upscale", index=self.index)


class VariationButton(
    discord.ui.DynamicItem[discord.ui.Button], template=rf"^ib:v:{_JOB}:(?P<i>\d):(?P<s>[sS])$"
):
    def __init__(
        self, job_id: str, index: int, strong: bool, *, row: int | None = None, single: bool = False
    ) -> None:
        if single:
            label = "Vary (Strong)" if strong else "Vary (Subtle)"
        else:
            label = f"V{index + 1}" + (" strong" if strong else "")
        super().__init__(
            discord.ui.Button(
                label=label,
                style=discord.ButtonStyle.primary if strong else discord.ButtonStyle.secondary,
                custom_id=variation_id(job_id, index, strong),
                row=row,
            )
        )
        self.job_id, self.index, self.strong = job_id, index, strong

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /
    ) -> VariationButton:
        return cls(match["job"], int(match["i"]), match["s"] == "S")

    async def callback(self, interaction: discord.Interaction) -> None:
        await run_handler(
            interaction, "derive", self.job_id, "variation", index=self.index, strong=self.strong
        )


@dataclass(frozen=True)
class _JobAction:
    label: str | None
    emoji: str
    style: discord.ButtonStyle
    action: tuple[str, ...]  # the handler's method, then its arguments after the job id


# Buttons about a whole job: alike but for their letter, look and action.
JOB_ACTIONS: dict[str, _JobAction] = {
    "r": _JobAction(
        None,
        "\N{CLOCKWISE RIGHTWARDS AND LEFTWARDS OPEN CIRCLE ARROWS}",
        discord.ButtonStyle.secondary,
        ("derive", "reroll"),
    ),
    "m": _JobAction("Remix", "\N{ARTIST PALETTE}", discord.ButtonStyle.secondary, ("open_remix",)),
    "d": _JobAction(None, "\N{WASTEBASKET}", discord.ButtonStyle.danger, ("delete",)),
}


class JobButton(discord.ui.DynamicItem[discord.ui.Button], template=rf"^ib:(?P<act>[rmd]):{_JOB}$"):
    """Reroll (``ib:r``), remix (``ib:m``) or delete (``ib:d``) a job."""

    def __init__(self, act: str, job_id: str, *, row: int | None = None) -> None:
        spec = JOB_ACTIONS[act]
        super().__init__(
            discord.ui.Button(
                label=spec.label,
                emoji=spec.emoji,
                style=spec.style,
                custom_id=f"ib:{act}:{job_id}",
                row=row,
            )
        )
        self.act, self.job_id = act, job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /
    ) -> JobButton:
        return cls(match["act"], match["job"])

    async def callback(self, interaction: discord.Interaction) -> None:
        method, *args = JOB_ACTIONS[self.act].action
        await run_handler(interaction, method, self.job_id, *args)


DYNAMIC_ITEMS = (UpscaleButton, VariationButton, JobButton, DescribeButton, *EDIT_ITEMS)


def result_view(job_id: str, count: int, *, kind: str = "imagine") -> discord.ui.View:
    """The buttons for a finished job: a grid gets U/V per image, a single image gets Vary,
    Zoom Out, Vary (Region) and Pan, as on Midjourney's upscaled images.

    Layout (classic components, at most 5 rows of 5)::

        grid:   U1 U2 U3 U4 [reroll]          single: Vary (Subtle) Vary (Strong) [U1]
                V1 V2 V3 V4 [remix]                   Zoom Out 2x, 1.5x, Custom Zoom, Vary (Region)
                V1s V2s V3s V4s [delete]              left right up down (pan)
                                                      [remix] [reroll] [delete]
    """
    view = discord.ui.View(timeout=None)
    count = max(1, min(count, 4))
    if kind == "upscale" or count == 1:
        view.add_item(VariationButton(job_id, 0, False, row=0, single=True))
        view.add_item(VariationButton(job_id, 0, True, row=0, single=True))
        if kind != "upscale":
            view.add_item(UpscaleButton(job_id, 0, row=0))
        add_edit_buttons(view, job_id, first_row=1)
        view.add_item(JobButton("m", job_id, row=3))
        if kind != "upscale":
            view.add_item(JobButton("r", job_id, row=3))
        view.add_item(JobButton("d", job_id, row=3))
        return view
    for i in range(count):
        view.add_item(UpscaleButton(job_id, i, row=0))
    view.add_item(JobButton("r", job_id, row=0))
    for i in range(count):
        view.add_item(VariationButton(job_id, i, False, row=1))
    view.add_item(JobButton("m", job_id, row=1))
    for i in range(count):
        view.add_item(VariationButton(job_id, i, True, row=2))
    view.add_item(JobButton("d", job_id, row=2))
    return view


REMIX_MODAL = re.compile(rf"^ib:mm:{_JOB}:\d+$")


class RemixModal(discord.ui.Modal, title="Remix"):
    """Edit the prompt, then reroll it or vary one of the images with it.

    Like the buttons, the submission is understood from its ids alone (``handle_modal_submit``,
    called for every modal interaction), so a modal opened before a restart still works.
    """

    def __init__(self, job_id: str, prompt: str, count: int, *, opened_by: int = 0) -> None:
        # Unique per opening: two people remixing the same job must not share one modal.
        super().__init__(timeout=15 * 60, custom_id=f"ib:mm:{job_id}:{opened_by}")
        self.add_item(
            discord.ui.TextInput(
                label="Prompt",
                style=discord.TextStyle.paragraph,
                default=prompt[:4000],
                max_length=4000,
                required=True,
                custom_id="prompt",
            )
        )
        self.add_item(
            discord.ui.TextInput(
                label=f"Vary image (1-{count}); empty = new images",
                required=False,
                max_length=12,
                placeholder="e.g. 2 or 2 strong",
                custom_id="image",
            )
        )

    async def on_submit(self, interaction: discord.Interaction) -> None:
        """Answered by ``handle_modal_submit`` (also after a restart), not by this instance."""


async def handle_modal_submit(interaction: discord.Interaction) -> bool:
    """Run a remix or edit form's submission; False when the interaction is not one of ours."""
    if interaction.type != discord.InteractionType.modal_submit:
        return False
    data: dict[str, Any] = dict(interaction.data or {})
    match = REMIX_MODAL.match(str(data.get("custom_id", "")))
    if match is None:
        return await handle_edit_modal(interaction, data)
    values = modal_values(data)
    await run_handler(
        interaction,
        "remix_submitted",
        match["job"],
        values.get("prompt", ""),
        values.get("image", ""),
    )
    return True
