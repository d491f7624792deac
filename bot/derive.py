"""Requests made from a finished job: upscale, variation, reroll, remix, zoom, pan and region.

A button can be pressed days later, in a DM, by someone else, after the files expired: the
parent is checked under its own server's rules before anything is rebuilt from it, and the new
request starts from the parent's stored parameters (its seed fixed), not from anything the
message shows.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

from bot import gate
from bot.access import require_access
from bot.params import PromptParams
from bot.replies import BANNED
from core.errors import UserInputError
from core.images import load_image
from core.jobs import Job, JobStatus
from generation.request import GenerationRequest

DEFAULT_COUNT = GenerationRequest.__dataclass_fields__["count"].default  # as many as /imagine

if TYPE_CHECKING:
    import discord

    from bot.submit import Submitter


async def usable_parent(
    submitter: Submitter, actor: discord.Interaction, parent: Job | None, job_id: str
) -> Job:
    """The job a press builds on, or a ``UserInputError`` saying why it cannot be used."""
    if parent is None or parent.delivery.get("deleted"):
        raise UserInputError(f"job {job_id} was deleted, so its buttons no longer work")
    if parent.status != JobStatus.DONE:
        raise UserInputError(f"job {job_id} has no images ({parent.status.value})")
    require_access(parent, actor)
    # The rules of the job's own server, also for a button pressed in a DM.
    if await submitter.banned(parent.guild_id, actor.user.id):
        raise UserInputError(BANNED)
    if actor.user.id != parent.user_id:
        policy = await gate.policy_for(
            submitter.store, submitter.settings, parent.guild_id, parent.channel_id
        )
        if not policy.others_can_press_buttons:
            raise UserInputError(
                "on this server only the person who made an image can press its buttons"
            )
    return parent


async def derived_request(
    submitter: Submitter,
    parent: Job,
    kind: str,
    index: int | None,
    strong: bool,
    prompt: str | None,
    canvas: str | None = None,
) -> tuple[GenerationRequest, dict[str, Any]]:
    """The new request, and what its delivery shows (prompt, summary, remix and strength).

    ``canvas``: a Zoom Out, Pan or Vary (Region) of image ``index`` (``kind`` is then zoom,
    pan or region), with as many images as an /imagine and new seeds.
    """
    engine = submitter.services.engine
    shown_prompt = (
        prompt
        if prompt is not None
        else parent.delivery.get("prompt") or parent.params.get("prompt", "")
    )
    extra: dict[str, Any] = {
        "prompt": shown_prompt,
        "summary": parent.delivery.get("summary", ""),
    }
    # A reroll of a zoom, pan or region paints the same source again (it stays that kind);
    # others drop the init image (unused, and it may have expired: retention).
    keep_source = kind == "reroll" and bool(parent.params.get("canvas"))
    params = {**parent.params}
    if not keep_source:
        params["init_image"] = None
    if kind != "reroll":  # a blend's images steer its rerolls; the rest start from one image
        params["references"] = None
    base = await asyncio.to_thread(GenerationRequest.from_params, params)
    if not keep_source:
        base = base.replace(init_image=None, kind="imagine", canvas=None)
    seed = count = None
    if prompt is not None:
        edited = submitter.parse(prompt)
        count = edited.count
        base = base.replace(**remix_changes(edited))
        seed = edited.seed
        extra.update(remix=True, prompt=edited.prompt, summary=edited.summary())
    if kind == "reroll":
        request = await asyncio.to_thread(engine.reroll_request, base)
        if seed is not None:  # a seed typed into the remix wins over the new random one
            request = request.replace(seed=seed)
        return request, extra
    image = await parent_image(submitter, parent, index or 0)
    if canvas is not None:
        return canvas_request(submitter, base, kind, canvas, image, seed, count), extra
    if kind == "upscale":
        return base.replace(init_image=image, kind="upscale", count=1, seed=None), extra
    extra["strong"] = strong
    request = await asyncio.to_thread(lambda: engine.variation_request(base, image, strong=strong))
    return request, extra


def canvas_request(
    submitter: Submitter,
    base: GenerationRequest,
    kind: str,
    canvas: str,
    image: Any,
    seed: int | None,
    count: int | None = None,
) -> GenerationRequest:
    """A zoom, pan or region request: the parent's prompt and settings, the image as the
    source of the canvas, sized by the engine (``generation/outpaint.py``); as many images as
    an /imagine unless the edited prompt says ``--count``."""
    return base.replace(
        kind=kind,
        canvas=canvas,
        init_image=image,
        strength=1.0,
        width=None,
        height=None,
        aspect_ratio=None,
        seed=seed,
        count=count or min(DEFAULT_COUNT, int(submitter.settings.model.max_count)),
        tile=False,  # a tile wraps around its edges; a zoom or pan gives it new ones
    )


async def parent_image(submitter: Submitter, parent: Job, index: int) -> Any:
    """Image ``index`` of ``parent`` from disk, unless moderation withheld it or it expired."""
    record = await submitter.store.get_image(parent.id, index)
    if record is None:
        raise UserInputError(f"job {parent.id} has no image {index + 1}")
    if record.blocked:
        raise UserInputError(f"image {index + 1} of job {parent.id} was withheld by moderation")
    if parent.delivery.get("files_expired"):  # core/retention.py
        raise UserInputError(
            f"the images of job {parent.id} were deleted ({parent.delivery['files_expired']})"
        )
    return await asyncio.to_thread(load_image, record.path, what=f"image {index + 1}")


def remix_changes(params: PromptParams) -> dict[str, Any]:
    """What an edited prompt changes in the parent's request (only what the user wrote)."""
    kwargs = params.request_kwargs()
    changes: dict[str, Any] = {
        "prompt": kwargs["prompt"],
        "negative_prompt": kwargs["negative_prompt"],
    }
    if params.aspect_ratio:
        changes.update(aspect_ratio=params.aspect_ratio, width=None, height=None)
    for name in ("steps", "guidance", "scheduler", "count", "chaos"):
        if kwargs.get(name) is not None:
            changes[name] = kwargs[name]
    # --tile is a flag: the remix text starts with the parent's summary, so a tiled parent's
    # text says --tile and leaving it in keeps tiling; deleting it is how a user turns it off.
    changes["tile"] = params.tile
    return changes


def remix_prompt(parent: Job) -> str:
    """The text the remix form starts with: the parent's prompt and parameters, minus its seed
    (a remix should give new images)."""
    prompt = parent.delivery.get("prompt") or parent.params.get("prompt", "")
    summary = re.sub(r"--seed \d+\s*", "", parent.delivery.get("summary", "")).strip()
    return f"{prompt} {summary}".strip()


def parse_vary_field(text: str, count: int) -> tuple[int, bool] | None:
    """The remix form's "vary image" field: None (reroll), or image index and strength."""
    words = (text or "").lower().split()
    if not words:
        return None
    if not words[0].isdigit() or not 1 <= int(words[0]) <= count:
        raise UserInputError(f"'vary image' must be a number from 1 to {count}, e.g. 2 or 2 strong")
    return int(words[0]) - 1, len(words) > 1 and words[1].startswith("str")
