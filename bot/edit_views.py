"""The buttons that repaint part of a single image: Zoom Out, Pan and Vary (Region).

Like the buttons in ``bot/views.py`` every item here is understood from its ``custom_id`` and
the store alone, so it works after a restart. An *op* names the edit in the ids (short, because
a ``custom_id`` holds 100 characters)::

    ib:e:<job>:<i>:<op>        Zoom Out / Pan of image i; op = z2, z1.5, zc (custom), pl pr pu pd
    ib:vr:<job>:<i>            Vary (Region): opens the region picker (a select menu)
    ib:rs:<job>:<i>            the region picker; each option's value is a region op, b<x0,y0,x1,y1>
    ib:em:<job>:<i>:<op>:<n>   the prompt form of an edit (custom zoom, remix mode, a region)

Discord has no brush, so a region is picked from presets (halves, centre) and from the faces and
people NudeNet finds in the image; the box travels in the op as fractions of the image.
"""

from __future__ import annotations

import re
from typing import Any

import discord

from bot.press import modal_values, run_handler
from core.errors import UserInputError

EDIT_COG = "Edit"  # the cog whose methods answer these (bot/cogs/edit.py)
_JOB = r"(?P<job>[a-z0-9]{1,40})"
_OP = r"(?P<op>z2|z1\.5|zc|p[lrud]|b[0-9.,]{7,40})"

PAN = {"pl": "left", "pr": "right", "pu": "up", "pd": "down"}
PAN_EMOJI = {
    "pl": "\N{LEFTWARDS BLACK ARROW}",
    "pr": "\N{BLACK RIGHTWARDS ARROW}",
    "pu": "\N{UPWARDS BLACK ARROW}",
    "pd": "\N{DOWNWARDS BLACK ARROW}",
}
ZOOM_LABELS = {"z2": "Zoom Out 2x", "z1.5": "Zoom Out 1.5x", "zc": "Custom Zoom"}
MAGNIFIER = "\N{LEFT-POINTING MAGNIFYING GLASS}"
BRUSH = "\N{LOWER LEFT PAINTBRUSH}"
MIN_ZOOM, MAX_ZOOM = 1.1, 2.0
# Preset regions as boxes (x0, y0, x1, y1) in fractions of the image.
REGION_PRESETS = {
    "Left half": (0.0, 0.0, 0.5, 1.0),
    "Right half": (0.5, 0.0, 1.0, 1.0),
    "Top half": (0.0, 0.0, 1.0, 0.5),
    "Bottom half": (0.0, 0.5, 1.0, 1.0),
    "Centre": (0.25, 0.25, 0.75, 0.75),
}


def box_op(box: tuple[float, float, float, float]) -> str:
    """The op of a region: ``b`` and its box in fractions, 3 decimals (``b0,0,0.5,1``)."""
    return "b" + ",".join(f"{v:.3f}".rstrip("0").rstrip(".") or "0" for v in box)


def canvas_of(op: str) -> tuple[str, str]:
    """The job kind and ``GenerationRequest.canvas`` spec an op asks for."""
    if op.startswith("z") and op != "zc":
        return "zoom", f"zoom:{op[1:]}"
    if op in PAN:
        return "pan", f"pan:{PAN[op]}"
    if op.startswith("b"):
        return "region", f"region:{op[1:]}"
    raise UserInputError(f"unknown edit {op!r}")


def zoom_op(text: str) -> tuple[str, str]:
    """The custom-zoom form's text without its ``--zoom N``, and the op for N (1.05 to 2)."""
    match = re.search(r"(?:^|\s)(?:--|\u2014|\u2013)zoom\s+(\S+)", text)
    if match is None:
        return text.strip(), "z2"
    try:
        factor = float(match.group(1))
    except ValueError:
        factor = float("nan")
    if not MIN_ZOOM <= factor <= MAX_ZOOM:  # also refuses NaN
        raise UserInputError(
            f"--zoom must be a number from {MIN_ZOOM:g} to {MAX_ZOOM:g}, not {match.group(1)!r}"
        )
    rest = (text[: match.start()] + " " + text[match.end() :]).strip()
    return rest, f"z{factor:g}"


def edit_id(job_id: str, index: int, op: str) -> str:
    return f"ib:e:{job_id}:{index}:{op}"


class EditButton(discord.ui.DynamicItem[discord.ui.Button], template=rf"^ib:e:{_JOB}:(?P<i>\d):{_OP}$"):
    """Zoom Out (2x, 1.5x, custom) or Pan (four arrows) of one image."""

    def __init__(self, job_id: str, index: int, op: str, *, row: int | None = None) -> None:
        super().__init__(
            discord.ui.Button(
                label=ZOOM_LABELS.get(op),
                emoji=PAN_EMOJI.get(op) or MAGNIFIER,
                style=discord.ButtonStyle.secondary,
                custom_id=edit_id(job_id, index, op),
                row=row,
            )
        )
        self.job_id, self.index, self.op = job_id, index, op

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /
    ) -> EditButton:
        return cls(match["job"], int(match["i"]), match["op"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await run_handler(interaction, "edit", self.job_id, self.index, self.op, cog=EDIT_COG)


class RegionButton(
    discord.ui.DynamicItem[discord.ui.Button], template=rf"^ib:vr:{_JOB}:(?P<i>\d)$"
):
    """Vary (Region): answers with the region picker, only to the presser."""

    def __init__(self, job_id: str, index: int, *, row: int | None = None) -> None:
        super().__init__(
            discord.ui.Button(
                label="Vary (Region)",
                emoji=BRUSH,
                style=discord.ButtonStyle.secondary,
                custom_id=f"ib:vr:{job_id}:{index}",
                row=row,
            )
        )
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /
    ) -> RegionButton:
        return cls(match["job"], int(match["i"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await run_handler(interaction, "open_region", self.job_id, self.index, cog=EDIT_COG)


class RegionSelect(
    discord.ui.DynamicItem[discord.ui.Select], template=rf"^ib:rs:{_JOB}:(?P<i>\d)$"
):
    """The region picker; the chosen value is a region op (``box_op``)."""

    def __init__(
        self, job_id: str, index: int, regions: dict[str, str] | None = None
    ) -> None:
        options = [
            discord.SelectOption(label=label, value=op) for label, op in (regions or {}).items()
        ] or [discord.SelectOption(label="Left half", value=box_op(REGION_PRESETS["Left half"]))]
        super().__init__(
            discord.ui.Select(
                custom_id=f"ib:rs:{job_id}:{index}",
                placeholder="Which part should change?",
                options=options[:25],
            )
        )
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Select, match: re.Match[str], /
    ) -> RegionSelect:
        return cls(match["job"], int(match["i"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        values = list((interaction.data or {}).get("values") or [])
        await run_handler(
            interaction, "region_chosen", self.job_id, self.index, values[0] if values else "",
            cog=EDIT_COG,
        )


def region_view(job_id: str, index: int, regions: dict[str, str]) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(RegionSelect(job_id, index, regions))
    return view


def add_edit_buttons(view: discord.ui.View, job_id: str, *, first_row: int) -> None:
    """Zoom Out, Vary (Region) and Pan under a single image (two rows from ``first_row``)."""
    for op in ("z2", "z1.5", "zc"):
        view.add_item(EditButton(job_id, 0, op, row=first_row))
    view.add_item(RegionButton(job_id, 0, row=first_row))
    for op in PAN:
        view.add_item(EditButton(job_id, 0, op, row=first_row + 1))


EDIT_MODAL = re.compile(rf"^ib:em:{_JOB}:(?P<i>\d):{_OP}:\d+$")


class EditModal(discord.ui.Modal, title="Edit"):
    """The prompt of a zoom, pan or region edit (and the zoom factor of Custom Zoom).

    Answered from its ids alone (``handle_edit_modal``), so a form opened before a restart works.
    """

    def __init__(
        self, job_id: str, index: int, op: str, prompt: str, *, opened_by: int = 0, title: str
    ) -> None:
        super().__init__(
            title=title[:45], timeout=15 * 60, custom_id=f"ib:em:{job_id}:{index}:{op}:{opened_by}"
        )
        self.add_item(
            discord.ui.TextInput(
                label="Prompt" if op != "zc" else "Prompt (--zoom 1.1 to 2)",
                style=discord.TextStyle.paragraph,
                default=prompt[:4000],
                max_length=4000,
                required=True,
                custom_id="prompt",
            )
        )

    async def on_submit(self, interaction: discord.Interaction) -> None:
        """Answered by ``handle_edit_modal`` (also after a restart), not by this instance."""


async def handle_edit_modal(interaction: discord.Interaction, data: dict[str, Any]) -> bool:
    """Run an edit form's submission; False when the form is not one of these."""
    match = EDIT_MODAL.match(str(data.get("custom_id", "")))
    if match is None:
        return False
    prompt = modal_values(data).get("prompt", "")
    await run_handler(
        interaction, "edit_submitted", match["job"], int(match["i"]), match["op"], prompt,
        cog=EDIT_COG,
    )
    return True


EDIT_ITEMS = (EditButton, RegionButton, RegionSelect)
