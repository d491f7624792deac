"""The buttons under a /describe answer: 1-4, each runs /imagine with that suggestion.

Like the result buttons (``bot/views.py``), each press is understood from its custom_id and the
store alone (``ib:ds:<describe>:<i>``), so the buttons work after a restart and a press
acknowledged just before a crash is replayed (``bot/accept.py``).
"""

from __future__ import annotations

import re

import discord

from bot.press import run_handler

DESCRIBE_COG = "Describe"  # the cog whose method answers a press (bot/cogs/describe.py)


def suggestion_id(describe_id: str, index: int) -> str:
    return f"ib:ds:{describe_id}:{index}"


class DescribeButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"^ib:ds:(?P<ds>[a-z0-9]{1,40}):(?P<i>\d)$",
):
    def __init__(self, describe_id: str, index: int) -> None:
        super().__init__(
            discord.ui.Button(
                label=str(index + 1),
                style=discord.ButtonStyle.secondary,
                custom_id=suggestion_id(describe_id, index),
            )
        )
        self.describe_id, self.index = describe_id, index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /
    ) -> DescribeButton:
        return cls(match["ds"], int(match["i"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await run_handler(interaction, "press", self.describe_id, self.index, cog=DESCRIBE_COG)


def describe_view(describe_id: str, suggestions: list[str | None]) -> discord.ui.View:
    """A button per suggestion the gate let through; a withheld one gets none."""
    view = discord.ui.View(timeout=None)
    for index, suggestion in enumerate(suggestions):
        if suggestion is not None:
            view.add_item(DescribeButton(describe_id, index))
    return view
