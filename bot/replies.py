"""How the bot answers an interaction when there is no result to show: one place for the
wording and the mechanics, so every refusal and every unexpected error looks the same.

An interaction may be unanswered, answered with a public or private "thinking" message, or
replayed after a restart; ``reply_error`` picks the right call for each, and never raises.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord

if TYPE_CHECKING:
    from bot.accept import Acceptor

log = logging.getLogger(__name__)

GENERIC_ERROR = "Something went wrong on our side; the error was logged for the admins."
NO_WORKER = "the image worker is not running; ask an admin to check the bot"
BANNED = "you are banned from using this bot on this server"


async def defer_thinking(interaction: discord.Interaction, *, ephemeral: bool) -> None:
    """Acknowledge at once (Discord allows 3 s) with a "thinking" message the job later edits."""
    interaction.extras["thinking"] = True
    interaction.extras["ephemeral"] = ephemeral
    await interaction.response.defer(ephemeral=ephemeral, thinking=True)


async def reply_error(
    interaction: discord.Interaction, message: str, acceptor: Acceptor | None = None
) -> None:
    """An ephemeral refusal; after a public defer the "thinking" message is removed first.

    With ``acceptor``, an interaction told by a follow-up is then marked answered: the user
    was told (or we tried), so start-up recovery must not replay it and its cap slot is free.
    """
    message = message[:1900]
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(message, ephemeral=True)
            return
        if interaction.extras.get("thinking"):
            if interaction.extras.get("ephemeral"):
                await interaction.edit_original_response(content=message)
                return
            try:
                await interaction.delete_original_response()
            except discord.HTTPException:
                pass
        await interaction.followup.send(message, ephemeral=True)
    except discord.HTTPException as exc:
        log.warning("could not tell the user about an error (%s): %s", exc.status, message)
    if acceptor is not None:
        await acceptor.answered(interaction)


