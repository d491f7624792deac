"""Running the handler of a press (button, select, form) by name, and reading a form's values.

Why a module of its own: the items of ``bot/views.py`` and ``bot/edit_views.py`` both need it,
and neither should import the other's cog; a press finds its cog by name at run time.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from bot.replies import GENERIC_ERROR, reply_error

if TYPE_CHECKING:
    import discord

    from bot.client import ImagineBot

log = logging.getLogger("bot.views")

HANDLER_COG = "Imagine"  # the cog whose methods answer most presses (bot/cogs/imagine.py)


async def run_handler(
    interaction: discord.Interaction[Any],
    action: str,
    *args: Any,
    cog: str = HANDLER_COG,
    **kwargs: Any,
) -> None:
    """Run cog ``cog``'s method ``action`` for a press; an unexpected error still gets the
    user an answer."""
    client: ImagineBot = interaction.client  # type: ignore[assignment]
    try:
        await getattr(client.get_cog(cog), action)(interaction, *args, **kwargs)
    except Exception:
        custom_id = (interaction.data or {}).get("custom_id")
        log.exception("component %s failed", custom_id)
        await reply_error(interaction, GENERIC_ERROR, client.acceptor)


def modal_values(data: dict[str, Any]) -> dict[str, str]:
    """``{custom_id: value}`` of a modal submission (action rows or labels)."""
    values: dict[str, str] = {}

    def walk(components: list[dict[str, Any]]) -> None:
        for comp in components:
            if "custom_id" in comp and "value" in comp:
                values[comp["custom_id"]] = str(comp["value"] or "")
            walk(comp.get("components", []))
            if isinstance(comp.get("component"), dict):
                walk([comp["component"]])

    walk(data.get("components", []))
    return values
