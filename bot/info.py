"""Answers to /queue, /show and /stats: read-only views of the store and the worker."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import discord

from bot.access import require_access
from bot.delivery import remember_result_message, result_content
from bot.progress import duration_text
from bot.replies import defer_thinking, reply_error
from bot.result_files import DEFAULT_UPLOAD_LIMIT, choose_files
from bot.views import result_view
from core import metrics
from core.errors import UserInputError
from core.jobs import JobStatus

if TYPE_CHECKING:
    from bot.accept import Acceptor
    from core.store import Store

log = logging.getLogger(__name__)


async def queue_report(store: Store, worker: Any, user_id: int) -> str:
    """/queue: the queue's length and where each of the user's own jobs stands."""
    mine = await store.jobs_for_user(
        user_id, statuses=[JobStatus.QUEUED, JobStatus.RUNNING], limit=25
    )
    estimates = worker.estimates(only=[j.id for j in mine]) if worker is not None else {}
    total = len(worker.scheduler) if worker is not None else 0
    lines = [f"**Queue:** {total} job{'s' if total != 1 else ''} waiting."]
    if not mine:
        lines.append("You have no queued or running jobs.")
    for job in sorted(mine, key=lambda j: j.seq):
        prompt = (job.delivery.get("prompt") or job.params.get("prompt", ""))[:60]
        if job.status == JobStatus.RUNNING:
            where = "running now"
        elif (est := estimates.get(job.id)) is not None:
            where = f"position {est.position}, starts in about {duration_text(est.eta_s)}"
        else:
            where = "queued"
        lines.append(f"`{job.id}` {job.kind.value}: {where} \u2014 {prompt}")
    return "\n".join(lines)[:2000]


async def show(
    store: Store, acceptor: Acceptor, interaction: discord.Interaction, job_id: str
) -> None:
    """Post a finished result again, with working buttons (e.g. after it scrolled away)."""
    job = await store.get_job(job_id.strip().lower())
    private = bool(job and job.delivery.get("private"))
    await defer_thinking(interaction, ephemeral=private)
    try:
        if job is None or job.delivery.get("deleted"):
            raise UserInputError(f"there is no job {job_id} (it may have been deleted)")
        if job.status != JobStatus.DONE:
            raise UserInputError(f"job {job.id} has no images ({job.status.value})")
        require_access(job, interaction)  # its own server only; age-restricted stays so
        images = await store.images_for_job(job.id)
        parent = await store.get_job(job.parent_job_id) if job.parent_job_id else None
        limit = interaction.filesize_limit or DEFAULT_UPLOAD_LIMIT
        files = await asyncio.to_thread(choose_files, job, images, limit)
        shown = [img for img in images if not img.blocked]
        kwargs: dict[str, Any] = {
            "content": result_content(job, parent, images, energy=True),
            "attachments": [f.to_file() for f in files],
            "allowed_mentions": discord.AllowedMentions.none(),
        }
        if shown:
            kwargs["view"] = result_view(job.id, len(shown), kind=job.kind.value)
        message = await interaction.edit_original_response(**kwargs)
        await remember_result_message(store, message.id, job.id)
    except UserInputError as exc:
        await reply_error(interaction, str(exc), acceptor)


def gpu_name() -> str:
    """The GPU the images are made on, for /stats; never raises."""
    try:
        import torch  # only when asked: the bot's own process may not need it loaded

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "Apple GPU (MPS)"
    except Exception:  # noqa: BLE001 - stats must never fail
        pass
    return "CPU (no GPU)"


async def count_images(store: Store, guild_id: int | None = None) -> int:
    if guild_id is None:
        sql, args = "SELECT COUNT(*) FROM images", ()
    else:
        sql = (
            "SELECT COUNT(*) FROM images JOIN jobs ON jobs.id = images.job_id "
            "WHERE jobs.guild_id = ?"
        )
        args = (guild_id,)
    async with store.db.execute(sql, args) as cur:
        return int((await cur.fetchone())[0])


async def stats_text(store: Store, worker: Any, guild_id: int | None) -> str:
    """/stats: images made here and in all, the queue, the GPU and its energy per image.

    The energy is the GPU's own counter (NVML) where the hardware has one, read around each
    GPU batch (``core.metrics.gpu_energy``), so idle time and other processes between
    batches are not charged to our images."""
    total = await count_images(store)
    here = await count_images(store, guild_id) if guild_id is not None else total
    queued = len(worker.scheduler) if worker is not None else 0
    wh = metrics.gpu_energy.wh_per_image()
    energy = (
        f"{wh:.3f} Wh per image (GPU counter, since start)"
        if wh is not None
        else "not measured (no GPU energy counter)"
    )
    return (
        f"**Images made:** {here} on this server, {total} in all\n"
        f"**Queue:** {queued} waiting\n"
        f"**GPU:** {gpu_name()}\n"
        f"**Energy:** {energy}"
    )
