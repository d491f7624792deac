"""The bot's side of moderation: the effective policy for a channel, the prompt gate (with the
deepfake check of an uploaded image), and the audit record of a refusal.

A thin adapter over ``moderation/`` so the actions read as one sentence each; the rules
themselves live in ``moderation/`` and are not repeated here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import discord
from PIL import Image

from bot.progress import preview_png
from moderation import audit
from moderation.decision import Decision, combine
from moderation.deepfake import check_output, check_request
from moderation.policy import Policy, load_policy
from moderation.prompt_gate import check_prompt

if TYPE_CHECKING:
    from core.config import Settings
    from core.jobs import Job
    from core.store import Store

log = logging.getLogger(__name__)


async def policy_for(
    store: Store, settings: Settings, guild_id: int | None, channel_id: int | None
) -> Policy:
    return await load_policy(store, guild_id, channel_id, base=Policy.default(settings))


async def check(
    store: Store,
    settings: Settings,
    prompt: str,
    guild_id: int | None,
    channel_id: int | None,
    *,
    nsfw_channel: bool,
    init_image: Image.Image | Sequence[Image.Image] | None = None,
    negative: str | None = None,
) -> Decision:
    """The prompt gate under the channel's policy; an init image (or each of /blend's images)
    adds the face check.

    ``negative`` (``--no``, the option, a remix's) is gated too: it is shown in the public
    result message, so a word refused in the prompt must not get through after ``--no``.
    """
    policy = await policy_for(store, settings, guild_id, channel_id)
    decision = check_prompt(prompt, policy, nsfw_channel=nsfw_channel)
    if negative and negative.strip() and not decision.blocked:
        refused = check_prompt(negative, policy, nsfw_channel=nsfw_channel)
        if refused.blocked:
            return replace(refused, reason=f"In the negative prompt (--no): {refused.reason}")
    images = [init_image] if isinstance(init_image, Image.Image) else list(init_image or [])
    for image in images:
        if decision.blocked:
            break
        # NudeNet on the upload: off the event loop.
        faces = await asyncio.to_thread(check_request, prompt, policy, init_image=image)
        decision = combine(decision, faces)
    return decision


async def record(
    store: Store,
    decision: Decision,
    *,
    guild_id: int | None,
    channel_id: int | None,
    user_id: int | None,
    stage: str = "prompt",
    job_id: str | None = None,
) -> Any:
    return await audit.record(
        store,
        guild_id=guild_id,
        channel_id=channel_id,
        user_id=user_id,
        job_id=job_id,
        stage=stage,
        decision=decision,
    )


async def post_to_mod_log(
    client: discord.Client,
    log_channel_id: int | None,
    interaction: discord.Interaction,
    prompt: str,
    decision: Decision,
) -> None:
    """Tell the server's moderators about a blocked prompt, in the channel they chose (if any).
    Best effort: a missing permission there must not turn the refusal into an error."""
    if not log_channel_id:
        return
    channel = client.get_partial_messageable(log_channel_id, guild_id=interaction.guild_id)
    embed = discord.Embed(
        title="Prompt blocked", description=prompt[:1000], colour=discord.Colour.red()
    )
    embed.add_field(name="User", value=f"<@{interaction.user.id}>")
    embed.add_field(name="Channel", value=f"<#{interaction.channel_id}>")
    embed.add_field(name="Reason", value=decision.reason[:1000] or "-", inline=False)
    if decision.categories:
        embed.add_field(name="Categories", value=", ".join(decision.categories)[:1000])
    try:
        await channel.send(embed=embed, allowed_mentions=discord.AllowedMentions.none())
    except discord.HTTPException as exc:
        log.warning(
            "cannot post to the moderation-log channel %s: %s", log_channel_id, exc.status
        )


def checked_preview(job: Job, image: Image.Image, policy: Policy) -> bytes | None:
    """The progress preview as JPEG bytes, or None when the final image's own output check
    (nudity and the deepfake rule, one NudeNet scan, ~15-60 ms) would not deliver it as is:
    previews are posted before post-processing runs, so they get the same check first.
    Blocking; call it off the event loop."""
    decision = check_output(
        str(job.params.get("prompt") or ""),
        image,
        policy,
        nsfw_channel=bool(job.delivery.get("nsfw_channel")),
    )
    return preview_png(image) if decision.allowed else None
