"""Getting a finished job's images (or the reason there are none) to the person who asked.

Delivery must never fail silently, which on Discord means three fall-backs:

* while the interaction token lives (15 minutes) the original "thinking" message is edited into
  the result; after that, or when Discord says the token is dead (401), a normal channel message
  mentions the user (a DM for private requests);
* files over the upload limit (the interaction carries it; 10 MiB by default) are re-encoded to
  WebP, then JPEG, then scaled down until they fit;
* when the channel where the user asked was deleted meanwhile (Discord answers 404), the user
  gets the same message by DM, under one line saying why; a refused DM (DMs closed) or a
  missing permission is recorded on the job with the reason, and the caller (the worker's
  listener) goes on with the next job.

Discord or the network failing for a while (5xx, a 429 that outlasts discord.py's own waiting,
a dropped connection) is retried with doubling waits; after ``attempts`` tries (counted on the
job, so restarts do not reset them) the job records why, the user is told where possible, and
delivery is claimed so the failure does not repeat on every restart.

Exactly once: the store's ``mark_delivered`` is claimed only after Discord accepted the message,
and an in-process set stops two callers (the worker and start-up recovery) sending together. A
crash between Discord's answer and the claim is covered too: the job is marked ``sending``
before the first try, and a later delivery of such a job first asks Discord whether the result
is already on the interaction's message (it usually is) before sending it again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import discord

from bot.result_files import DEFAULT_UPLOAD_LIMIT, EncodedFile, choose_files
from bot.views import result_view
from core.jobs import ImageRecord, Job, JobStatus
from core.metrics import energy_text

if TYPE_CHECKING:
    from core.store import Store

log = logging.getLogger(__name__)

TOKEN_LIFETIME_S = 15 * 60
TOKEN_MARGIN_S = 30  # switch to a channel message a little before Discord would refuse
MAX_CONTENT = 2000
INVALID_WEBHOOK_TOKEN = 50027
UNKNOWN_WEBHOOK = 10015
UNKNOWN_MESSAGE = 10008
CANNOT_DM = 50007
MESSAGE_KEY = "bot.message:"  # kv: result message id -> job id (reaction shortcuts)


class Undeliverable(Exception):
    """Discord refused every way to the user; the message is the reason kept on the job."""


def _mention(user_id: int | None) -> str:
    return f"<@{user_id}>" if user_id else "someone"


def derived_line(job: Job, parent: Job | None) -> str:
    """ "Variation (strong) of @alice's image 2 by @bob": whose work this builds on."""
    by = _mention(job.user_id)
    if not job.parent_job_id:
        return f"by {by}"
    owner = _mention(parent.user_id if parent else None)
    image = (
        f" image {job.parent_image_index + 1}" if job.parent_image_index is not None else " prompt"
    )
    what = {
        "upscale": "Upscale",
        "variation": "Variation (strong)" if job.delivery.get("strong") else "Variation",
        "reroll": "Reroll",
        "zoom": "Zoom Out",
        "pan": "Pan",
        "region": "Vary (Region)",
    }.get(str(getattr(job.kind, "value", job.kind)), "Remix")
    canvas = str(job.params.get("canvas") or "")
    if canvas.startswith(("zoom:", "pan:")):  # "Zoom Out 2x", "Pan left"
        what += f" {canvas.split(':', 1)[1]}" + ("x" if canvas.startswith("zoom:") else "")
    if job.delivery.get("remix") and not canvas:  # an edit's form always holds a prompt
        what = f"Remix {what.lower()}"
    return f"{what} of {owner}'s{image} by {by}"


def result_content(
    job: Job, parent: Job | None, images: list[ImageRecord], *, energy: bool = False
) -> str:
    """The text of a result message: prompt, parameters, seeds, who asked and what it builds on.

    ``energy`` adds the GPU energy charged to the job (``/show``'s detail view)."""
    prompt = job.delivery.get("prompt") or job.params.get("prompt", "")
    summary = job.delivery.get("summary", "")
    seeds = ", ".join(str(img.seed) for img in images if not img.blocked)
    blocked = sum(1 for img in images if img.blocked)
    tail = f"\n{derived_line(job, parent)} \u00b7 job `{job.id}`"
    if seeds:
        tail += f" \u00b7 seed{'s' if ',' in seeds else ''} {seeds}"
    if summary:
        tail += f"\n`{summary[:300]}`"
    if blocked:
        tail += f"\n{blocked} image{'s were' if blocked > 1 else ' was'} withheld by moderation."
    if job.delivery.get("note"):  # what the model ignored of the request (bot/submit.py)
        tail += f"\n{job.delivery['note']}"
    if energy:
        tail += f"\nGPU energy: {energy_text(job.energy_joules)}"
    room = MAX_CONTENT - len(tail) - 4
    if len(prompt) > room:
        prompt = prompt[: max(0, room - 1)] + "\u2026"
    return f"**{prompt}**{tail}"


def failure_content(job: Job) -> str:
    reason = job.error or "unknown error"
    what = {
        JobStatus.BLOCKED: "was blocked by this server's moderation",
        JobStatus.CANCELLED: "was cancelled",
    }.get(job.status, "failed")
    return f"{_mention(job.user_id)} your job `{job.id}` {what}: {reason}"[:MAX_CONTENT]


def channel_gone_note(job: Job) -> str:
    """The line above a result that arrives by DM because its channel was deleted."""
    where = f" (<#{job.channel_id}>)" if job.channel_id else ""
    return f"\u26a0\ufe0f The channel where you asked for this{where} is gone, so it comes by DM."


def token_alive(delivery: dict[str, Any], now: float | None = None) -> bool:
    created = delivery.get("created_at")
    if not delivery.get("token") or created is None:
        return False
    now = time.time() if now is None else now
    return now - float(created) < TOKEN_LIFETIME_S - TOKEN_MARGIN_S


class Delivery:
    """Sends results and failures for jobs; one instance per running bot."""

    def __init__(
        self,
        client: discord.Client,
        store: Store,
        *,
        view_factory: Any = None,
        attempts: int = 5,
        backoff_s: float = 2.0,
    ) -> None:
        self.client = client
        self.store = store
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self._in_flight: set[str] = set()
        self._view_factory = view_factory or result_view

    async def deliver(self, job_id: str) -> discord.Message | None:
        """Deliver a finished job once; the message this call made (None when it sent nothing:
        delivered before, by another caller, cancelled, or refused by Discord)."""
        if job_id in self._in_flight:
            return None
        self._in_flight.add(job_id)
        try:
            job = await self.store.get_job(job_id)
            if job is None or job.delivered_at is not None or not job.status.finished:
                return None
            shown = await self._already_shown(job) if job.delivery.get("sending") else None
            if shown is None:
                await self.store.update_delivery(job.id, {"sending": True})
                message = await self._deliver_with_retries(job)
            else:
                log.info("job %s: its result reached Discord before a restart; not resent", job.id)
                message = shown
            claimed = await self.store.mark_delivered(job.id)
            return message if claimed else None
        finally:
            self._in_flight.discard(job_id)

    async def _already_shown(self, job: Job) -> discord.Message | None:
        """The interaction's message when it already carries this job's result files.

        Only the token's message can be asked cheaply; a result posted to a channel after the
        token expired is sent again in this (rare) case, rather than risk losing it."""
        delivery = job.delivery
        if job.status != JobStatus.DONE or not token_alive(delivery):
            return None
        webhook = discord.Webhook.partial(
            int(delivery["application_id"]), delivery["token"], client=self.client
        )
        try:
            message = await webhook.fetch_message(delivery.get("message_id") or "@original")  # type: ignore[arg-type]
        except (discord.HTTPException, aiohttp.ClientError, asyncio.TimeoutError):
            return None  # cannot tell: sending again beats losing the result
        if any(job.id in a.filename for a in message.attachments):
            return message
        return None

    async def _deliver_with_retries(self, job: Job) -> discord.Message | None:
        tries = int(job.delivery.get("delivery_attempts") or 0)
        while True:
            try:
                message = None
                if job.status == JobStatus.DONE:
                    message = await self._send_result(job)
                elif job.status != JobStatus.CANCELLED:
                    message = await self.send(
                        job, failure_content(job), files=[], view=discord.utils.MISSING
                    )
                if message is not None:
                    await self.store.update_delivery(job.id, {"result_message_id": message.id})
                return message
            except (discord.NotFound, discord.Forbidden, Undeliverable) as exc:
                reason = _why(exc)
            except Exception as exc:  # noqa: BLE001 - anything else may pass on another try
                if isinstance(exc, discord.HTTPException) and not _transient(exc):
                    reason = f"Discord refused the message ({exc.status}: {exc.text})"
                    log.warning("job %s could not be delivered: %s", job.id, reason)
                    await self.store.update_delivery(job.id, {"failed": reason})
                    return None
                if not _transient(exc):
                    log.exception("job %s: delivery failed", job.id)
                tries += 1
                await self.store.update_delivery(job.id, {"delivery_attempts": tries})
                if tries < self.attempts:
                    delay = self.backoff_s * 2 ** (tries - 1)
                    log.warning(
                        "job %s: delivery failed (%s); try %d of %d in %.1f s",
                        job.id,
                        _transient_why(exc),
                        tries + 1,
                        self.attempts,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    continue
                reason = f"Discord kept failing ({_transient_why(exc)}) after {tries} tries"
                await self._tell(
                    job,
                    f"your job `{job.id}` finished but could not be sent: "
                    f"{reason}. Try `/show {job.id}` later.",
                )
            log.warning("job %s could not be delivered: %s", job.id, reason)
            await self.store.update_delivery(job.id, {"failed": reason})
            return None

    async def _tell(self, job: Job, text: str) -> None:
        """Best effort, one try: a short text may pass where the result did not."""
        try:
            await self.send(job, text, files=[], view=discord.utils.MISSING)
        except Exception as exc:  # noqa: BLE001 - the job records the reason anyway
            log.info("job %s: could not tell the user either (%s)", job.id, exc)

    async def _send_result(self, job: Job) -> discord.Message | None:
        images = await self.store.images_for_job(job.id)
        parent = await self.store.get_job(job.parent_job_id) if job.parent_job_id else None
        limit = int(job.delivery.get("filesize_limit") or DEFAULT_UPLOAD_LIMIT)
        files = await asyncio.to_thread(choose_files, job, images, limit)
        shown = [img for img in images if not img.blocked]
        content = result_content(job, parent, images)
        view = (
            self._view_factory(job.id, len(shown), kind=str(job.kind.value))
            if shown
            else discord.utils.MISSING
        )
        return await self.send(job, content, files=files, view=view)

    async def send(
        self, job: Job, content: str, *, files: list[EncodedFile], view: Any
    ) -> discord.Message | None:
        """Where the user asked; if that channel is gone (404), by DM under a note saying so.

        Raises ``Undeliverable`` when the DM is refused too, so the job records both reasons.
        """
        try:
            return await self._send_where_asked(job, content, files=files, view=view)
        except discord.NotFound as gone:
            if not job.user_id or not job.channel_id:
                raise
            log.info("job %s: its channel is gone (%s); sending it by DM", job.id, gone.code)
            try:
                user = self.client.get_user(job.user_id) or await self.client.fetch_user(
                    job.user_id
                )
                message = await user.send(
                    **_message_kwargs(job, f"{channel_gone_note(job)}\n{content}", files, view)
                )
            except (discord.NotFound, discord.Forbidden) as refused:
                raise Undeliverable(f"{_why(gone)}, and {_why(refused)}") from refused
            await self.store.update_delivery(job.id, {"rerouted": _why(gone)})
            return message

    async def _send_where_asked(
        self, job: Job, content: str, *, files: list[EncodedFile], view: Any
    ) -> discord.Message | None:
        """Edit the interaction's message while its token lives, else post a new message."""
        delivery = job.delivery
        if token_alive(delivery):
            webhook = discord.Webhook.partial(
                int(delivery["application_id"]), delivery["token"], client=self.client
            )
            try:
                return await webhook.edit_message(
                    delivery.get("message_id") or "@original",  # type: ignore[arg-type]
                    content=content,
                    attachments=[f.to_file() for f in files],
                    view=view if view is not discord.utils.MISSING else None,
                    allowed_mentions=_only_the_user(job),
                )
            except discord.HTTPException as exc:
                if exc.code == UNKNOWN_MESSAGE and not delivery.get("private"):
                    # Deleted by someone, or with its channel: a channel post tells which.
                    log.info("job %s: its message is gone, posting to the channel", job.id)
                elif exc.status != 401 and exc.code not in (INVALID_WEBHOOK_TOKEN, UNKNOWN_WEBHOOK):
                    raise
                else:
                    log.info("job %s: interaction token expired, posting to the channel", job.id)
        kwargs = _message_kwargs(job, content, files, view)
        placeholder = delivery.get("channel_message_id")
        if placeholder and job.channel_id:
            # A reaction shortcut posted "queued..." itself: turn that message into the result.
            channel = self.client.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
            kwargs.pop("files", None)
            kwargs["attachments"] = [f.to_file() for f in files]
            try:
                return await channel.get_partial_message(int(placeholder)).edit(**kwargs)
            except discord.NotFound:
                kwargs.pop("attachments")
                kwargs["files"] = [f.to_file() for f in files]
        if delivery.get("private") or not job.channel_id:
            user = self.client.get_user(job.user_id) or await self.client.fetch_user(job.user_id)
            return await user.send(**kwargs)
        channel = self.client.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
        return await channel.send(**kwargs)


async def remember_result_message(store: Store, message_id: int, job_id: str) -> None:
    """Reactions on a result message find their job by the message's id."""
    await store.set_value(f"{MESSAGE_KEY}{message_id}", job_id)


async def job_for_message(store: Store, message_id: int) -> str | None:
    return await store.get_value(f"{MESSAGE_KEY}{message_id}")


def _message_kwargs(job: Job, content: str, files: list[EncodedFile], view: Any) -> dict[str, Any]:
    """A new message's arguments: the user mentioned (and pinged, nobody else), fresh files."""
    mention = _mention(job.user_id)
    text = content if mention in content else f"{mention} {content}"
    if len(text) > MAX_CONTENT:
        text = text[: MAX_CONTENT - 1] + "\u2026"
    kwargs: dict[str, Any] = {"content": text, "allowed_mentions": _only_the_user(job)}
    if files:
        kwargs["files"] = [f.to_file() for f in files]
    if view is not discord.utils.MISSING:
        kwargs["view"] = view
    return kwargs


def _only_the_user(job: Job) -> discord.AllowedMentions:
    return discord.AllowedMentions(users=[discord.Object(job.user_id)], roles=False, everyone=False)


def _transient(exc: BaseException) -> bool:
    """Worth another try later: Discord's server errors and rate limits, network failures.
    Other 4xx answers (a malformed message) would fail the same way again."""
    if isinstance(exc, discord.HTTPException):
        return exc.status == 429 or exc.status >= 500
    return isinstance(
        exc, (discord.RateLimited, aiohttp.ClientError, OSError, asyncio.TimeoutError)
    )


def _transient_why(exc: BaseException) -> str:
    if isinstance(exc, discord.HTTPException):
        return f"HTTP {exc.status}"
    return type(exc).__name__


def _why(exc: discord.HTTPException | Undeliverable) -> str:
    if isinstance(exc, Undeliverable):
        return str(exc)
    if exc.code == CANNOT_DM:
        return f"the user does not accept direct messages ({exc.text or exc.status})"
    if isinstance(exc, discord.NotFound):
        return f"the channel or message is gone ({exc.text or exc.status})"
    return f"the bot lacks permission to post there ({exc.text or exc.status})"
