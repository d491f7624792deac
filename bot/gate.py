"""The bot's side of moderation: the effective policy for a channel, the prompt gate (with the
deepfake check of an uploaded image), and the audit record of a refusal.

A thin adapter over ``moderation/`` so the actions read as one sentence each; the rules
themselves live in ``moderation/`` and are not repeated here.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from bot.progress import preview_png
from moderation import audit
from moderation.decision import Decision, combine
from moderation.deepfake import check_output
from moderation.policy import Policy, load_policy

if TYPE_CHECKING:
    from PIL import Image

    from generation.config import Settings
    from generation.jobs import Job
    from generation.store import Store


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
    init_image: Image.Image | None = None,
    negative: str | None = None,
) -> Decision:
    """The prompt gate under the channel's policy; an init image adds the face check.

    ``negative`` (``--no``, the option, a remix's) is gated too: it is shown in the public
    result message, so a word refused in the prompt must not get through after ``--no``.
    """
    from moderation.deepfake import check_request
    from moderation.prompt_gate import check_prompt

    policy = await policy_for(store, settings, guild_id, channel_id)
    decision = check_prompt(prompt, policy, nsfw_channel=nsfw_channel)
    if negative and negative.strip() and not decision.blocked:
        refused = check_prompt(negative, policy, nsfw_channel=nsfw_channel)
        if refused.blocked:
            return replace(refused, reason=f"In the negative prompt (--no): {refused.reason}")
    if init_image is not None and not decision.blocked:
        # NudeNet on the upload: off the event loop.
        faces = await asyncio.to_thread(check_request, prompt, policy, init_image=init_image)
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
