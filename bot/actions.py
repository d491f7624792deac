"""What the bot does when someone asks for images: by slash command, button, modal or reaction.

All entry points meet here so that every path applies the same rules in the same order:
defer first (Discord's 3 seconds), then input checks, the prompt gate under the channel's policy,
the user's caps, and finally ``worker.submit`` (the job row is committed before the user sees
"queued"). Every refusal is an ephemeral message naming the problem; nothing raises to Discord.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, Any

import discord

from bot import gate
from bot.accept import Acceptor
from bot.access import is_moderator, is_nsfw, require_access
from bot.client import interaction_delivery
from bot.delivery import Delivery
from bot.guild_settings import GuildSettingsStore
from bot.params import PromptParams, parse_aspect_ratio, parse_prompt
from bot.progress import ProgressEditor, progress_text, queue_text
from bot.user_settings import UserSettingsStore
from generation.admission import RateLimiter
from generation.errors import UserInputError
from generation.images import load_image
from generation.jobs import ImageRecord, Job, JobStatus

if TYPE_CHECKING:
    from bot.services import Services
    from generation.eta import Estimate

log = logging.getLogger(__name__)

REROLL = "\N{CLOCKWISE RIGHTWARDS AND LEFTWARDS OPEN CIRCLE ARROWS}"
UPSCALE = "\N{UPWARDS BLACK ARROW}"
VARY = "\N{ARTIST PALETTE}"
REACTIONS = {REROLL: "reroll", UPSCALE: "upscale", UPSCALE + "\ufe0f": "upscale", VARY: "variation"}
MESSAGE_KEY = "bot.message:"  # kv: result message id -> job id (reaction shortcuts)


class Actions:
    """The bot's behaviour; also the worker's listener (on_queued ... on_failed)."""

    def __init__(self, client: discord.Client, services: Services) -> None:
        self.client = client
        self.services = services
        self.settings = services.settings
        self.store = services.store
        self.user_settings = UserSettingsStore(services.store)
        self.guild_settings = GuildSettingsStore(services.store)
        self.delivery = Delivery(
            client,
            services.store,
            attempts=self.settings.discord.delivery_attempts,
            backoff_s=self.settings.discord.delivery_backoff_s,
        )
        self.acceptor = Acceptor(self)  # rate limit, cap slot, durable record, ack
        self.lookups = RateLimiter(self.settings.discord.lookups_per_minute, 60.0)
        self.progress = ProgressEditor(client, self.settings.discord.progress_interval_s)
        from bot.info import EnergyMeter

        self.energy = EnergyMeter()

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Become the worker's listener (it then re-offers undelivered jobs to us)."""
        from bot.info import count_images

        self.energy.start_images = await count_images(self)
        await self.user_settings.preload()
        worker = self.services.worker
        if worker is not None:
            worker.listener = self

    async def stop(self) -> None:
        await self.progress.close()

    # --- worker listener ----------------------------------------------------------------------

    async def on_queued(self, job: Job, estimate: Estimate | None) -> None:
        if estimate is not None:
            self.progress.update(job, queue_text(estimate.position, estimate.eta_s), force=True)

    async def on_started(self, job: Job) -> None:
        self.progress.update(job, "Starting\u2026")

    async def on_progress(self, job: Job, event: Any) -> None:
        if not self.progress.would_edit(job):
            return  # skip the preview encode too
        preview = None
        if event.preview is not None:
            policy = await gate.policy_for(
                self.store, self.settings, job.guild_id, job.channel_id
            )
            # Made lazily from the latents, checked like the final image, encoded: off the loop.
            preview = await asyncio.to_thread(gate.checked_preview, job, event.preview, policy)
        self.progress.update(job, progress_text(event.step, event.total), preview)

    async def on_done(self, job: Job, images: list[ImageRecord]) -> None:
        await self._deliver(job)

    async def on_failed(self, job: Job, reason: str) -> None:
        await self._deliver(job)

    async def _deliver(self, job: Job) -> None:
        await self.progress.finish(job.id)
        try:
            await self.delivery.deliver(job.id)
        except Exception:
            log.exception(
                "job %s: delivery failed; it stays undelivered for the next start", job.id
            )
            return
        fresh = await self.store.get_job(job.id)
        message_id = fresh.delivery.get("result_message_id") if fresh else None
        if message_id:
            await self.store.set_value(f"{MESSAGE_KEY}{message_id}", job.id)

    # --- /imagine -------------------------------------------------------------------------------

    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: str,
        *,
        image: discord.Attachment | None = None,
        aspect_ratio: str | None = None,
        seed: int | None = None,
        negative: str | None = None,
        quality: float | None = None,
        steps: int | None = None,
        style: str | None = None,
        private: bool | None = None,
    ) -> None:
        defaults = await self.user_settings.get(interaction.user.id)
        private = defaults.private if private is None else private
        try:
            await self.acceptor.accept(interaction, ephemeral=private)
            params = self._merge_options(
                parse_prompt(
                    prompt,
                    max_chars=self.settings.model.max_prompt_chars,
                    max_steps=self.settings.model.max_steps,
                    max_count=self.settings.model.max_count,
                ),
                aspect_ratio=aspect_ratio or defaults.aspect_ratio,
                seed=seed,
                negative=negative,
                quality=quality,
                steps=steps,
                style=style or defaults.style,
            )
            init_image = await self._read_attachment(image) if image is not None else None
            # The texts the model gets (styles expanded), each gated: prompt and negative.
            kwargs = params.request_kwargs()
            flags = await self._gate(
                interaction, kwargs["prompt"], init_image, negative=kwargs["negative_prompt"]
            )
            from generation.request import GenerationRequest

            request = GenerationRequest(**kwargs, init_image=init_image)
            if params.quality is not None:
                request = await self._apply_quality(request, params.quality)
            await self._submit(
                interaction,
                request,
                delivery={
                    "private": private,
                    "prompt": params.prompt,
                    "summary": params.summary(),
                    **flags,
                },
            )
        except UserInputError as exc:
            await self.refuse(interaction, str(exc))

    def _merge_options(self, params: PromptParams, **options: Any) -> PromptParams:
        """Slash-command options fill in what the inline parameters left out."""
        changes: dict[str, Any] = {}
        if options["aspect_ratio"] and params.aspect_ratio is None:
            changes["aspect_ratio"] = parse_aspect_ratio(
                options["aspect_ratio"], what="aspect_ratio"
            )
        for name in ("seed", "quality", "steps", "style"):
            if options[name] is not None and getattr(params, name) is None:
                changes[name] = options[name]
        if options["steps"] is not None and options["steps"] > self.settings.model.max_steps:
            raise UserInputError(f"steps must be from 1 to {self.settings.model.max_steps}")
        if options["negative"]:
            joined = ", ".join(p for p in (params.negative_prompt, options["negative"]) if p)
            changes["negative_prompt"] = joined
        from dataclasses import replace

        return replace(params, **changes) if changes else params

    async def _apply_quality(self, request: Any, quality: float) -> Any:
        """``--q`` scales the model's default steps (Midjourney: .25 draft ... 2 high)."""
        if request.steps is not None:
            return request
        engine = self.services.engine
        base = engine.defaults.steps
        steps = max(1, min(self.settings.model.max_steps, round(base * quality)))
        return request.replace(steps=steps)

    async def _read_attachment(self, attachment: discord.Attachment) -> Any:
        from bot.uploads import read_upload

        return await read_upload(attachment, self.settings)

    async def _gate(
        self,
        interaction: discord.Interaction,
        prompt: str,
        init_image: Any = None,
        *,
        negative: str | None = None,
        parent: Job | None = None,
    ) -> dict[str, Any]:
        """Refuse (and log for moderators) what the channel's policy does not allow.

        Returns what delivery must know: the channel's age restriction and whether the result
        goes behind a spoiler. A button pressed in a DM is judged by its job's server policy.
        """
        guild_id, channel_id = _where(interaction, parent)
        if await self._banned(guild_id, interaction.user.id):
            raise UserInputError("you are banned from using this bot on this server")
        nsfw = is_nsfw(interaction.channel)
        decision = await gate.check(
            self.store,
            self.settings,
            prompt,
            guild_id,
            channel_id,
            nsfw_channel=nsfw,
            init_image=init_image,
            negative=negative,
        )
        if decision.needs_audit:
            stage = (
                "input_image" if "real_person" in decision.categories and init_image else "prompt"
            )
            await gate.record(
                self.store,
                decision,
                guild_id=guild_id,
                channel_id=channel_id,
                user_id=interaction.user.id,
                stage=stage,
            )
        if decision.blocked:
            shown = f"{prompt} --no {negative}" if negative else prompt
            await self._post_to_mod_log(interaction, shown, decision)
            raise UserInputError(f"your prompt was blocked. {decision.reason}")
        return {"nsfw_channel": nsfw, "spoiler": decision.action == "spoiler"}

    async def _banned(self, guild_id: int | None, user_id: int) -> bool:
        settings = await self.guild_settings.get(guild_id)
        return user_id in settings.banned_user_ids

    async def _post_to_mod_log(
        self, interaction: discord.Interaction, prompt: str, decision: Any
    ) -> None:
        settings = await self.guild_settings.get(interaction.guild_id)
        if not settings.log_channel_id:
            return
        channel = self.client.get_partial_messageable(
            settings.log_channel_id, guild_id=interaction.guild_id
        )
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
                "cannot post to the moderation-log channel %s: %s",
                settings.log_channel_id,
                exc.status,
            )

    async def _submit(
        self,
        interaction: discord.Interaction,
        request: Any,
        *,
        delivery: dict[str, Any],
        parent: Job | None = None,
        parent_image_index: int | None = None,
    ) -> Job:
        worker = self.services.worker
        if worker is None:
            raise UserInputError("the image worker is not running; ask an admin to check the bot")
        guild_id, _ = _where(interaction, parent)
        guild = await self.guild_settings.get(guild_id)
        # Reserved when the interaction was accepted (bot/accept.py); else here, atomically.
        reservation = interaction.extras.get("reservation")
        if reservation is None or not reservation.held:
            user_id = interaction.user.id
            reservation = worker.admission.reserve(user_id, guild.cap_for(user_id))
        member_roles = list(getattr(interaction.user, "roles", []))
        roles = [r.id for r in member_roles]
        credited = [interaction.user.id]
        if parent is not None:
            credited += [parent.user_id, *parent.credited_user_ids]
        return await worker.submit(
            request,
            user_id=interaction.user.id,
            guild_id=guild_id,  # a job made from a DM button still belongs to its server
            channel_id=interaction.channel_id,
            parent_job_id=parent.id if parent else None,
            parent_image_index=parent_image_index,
            credited_user_ids=list(dict.fromkeys(credited)),
            # The server's /policy role-weight (by role id), or the instance-wide
            # queue.role_weights (by role name): the larger share wins.
            weight=max(
                guild.weight_for(roles), worker.weight_for_roles(r.name for r in member_roles)
            ),
            delivery=interaction_delivery(interaction, **delivery),
            reservation=reservation,
        )

    # --- buttons, modal, reactions ----------------------------------------------------------

    async def derive(
        self,
        interaction: discord.Interaction,
        job_id: str,
        kind: str,
        *,
        index: int | None = None,
        strong: bool = False,
        prompt: str | None = None,
        deferred: bool = False,
    ) -> None:
        """Upscale, variation or reroll of a finished job, charged to whoever pressed."""
        parent = await self.store.get_job(job_id)
        private = bool(parent and parent.delivery.get("private"))
        try:
            if not deferred:
                await self.acceptor.accept(interaction, ephemeral=private, press=True)
            parent = await self._usable_parent(interaction, parent, job_id)
            request, extra = await self._derived_request(parent, kind, index, strong, prompt)
            extra.update(
                await self._gate(
                    interaction, request.prompt, negative=request.negative_prompt, parent=parent
                )
            )
            await self._submit(
                interaction,
                request,
                parent=parent,
                parent_image_index=index,
                delivery={"private": private, **extra},
            )
        except UserInputError as exc:
            await self.refuse(interaction, str(exc))

    async def _usable_parent(
        self, interaction: discord.Interaction, parent: Job | None, job_id: str
    ) -> Job:
        if parent is None or parent.delivery.get("deleted"):
            raise UserInputError(f"job {job_id} was deleted, so its buttons no longer work")
        if parent.status != JobStatus.DONE:
            raise UserInputError(f"job {job_id} has no images ({parent.status.value})")
        require_access(parent, interaction)
        # The rules of the job's own server, also for a button pressed in a DM.
        if await self._banned(parent.guild_id, interaction.user.id):
            raise UserInputError("you are banned from using this bot on this server")
        if interaction.user.id != parent.user_id:
            policy = await gate.policy_for(
                self.store, self.settings, parent.guild_id, parent.channel_id
            )
            if not policy.others_can_press_buttons:
                raise UserInputError(
                    "on this server only the person who made an image can press its buttons"
                )
        return parent

    async def _derived_request(
        self, parent: Job, kind: str, index: int | None, strong: bool, prompt: str | None
    ) -> tuple[Any, dict[str, Any]]:
        from generation.request import GenerationRequest

        engine = self.services.engine
        shown_prompt = (
            prompt
            if prompt is not None
            else parent.delivery.get("prompt") or parent.params.get("prompt", "")
        )
        extra: dict[str, Any] = {
            "prompt": shown_prompt,
            "summary": parent.delivery.get("summary", ""),
        }
        # Without its init image: dropped just below, and it may have expired (retention).
        params = {**parent.params, "init_image": None}
        base = await asyncio.to_thread(GenerationRequest.from_params, params)
        base = base.replace(init_image=None, kind="imagine")
        seed = None
        if prompt is not None:
            params = parse_prompt(
                prompt,
                max_chars=self.settings.model.max_prompt_chars,
                max_steps=self.settings.model.max_steps,
                max_count=self.settings.model.max_count,
            )
            base = base.replace(**_remix_changes(params))
            seed = params.seed
            extra.update(remix=True, prompt=params.prompt, summary=params.summary())
        if kind == "reroll":
            request = await asyncio.to_thread(engine.reroll_request, base)
            if seed is not None:  # a seed typed into the remix wins over the new random one
                request = request.replace(seed=seed)
            return request, extra
        image = await self._parent_image(parent, index or 0)
        if kind == "upscale":
            return base.replace(init_image=image, kind="upscale", count=1, seed=None), extra
        extra["strong"] = strong
        request = await asyncio.to_thread(
            lambda: engine.variation_request(base, image, strong=strong)
        )
        return request, extra

    async def _parent_image(self, parent: Job, index: int) -> Any:
        record = await self.store.get_image(parent.id, index)
        if record is None:
            raise UserInputError(f"job {parent.id} has no image {index + 1}")
        if record.blocked:
            raise UserInputError(f"image {index + 1} of job {parent.id} was withheld by moderation")
        if parent.delivery.get("files_expired"):  # generation/retention.py
            raise UserInputError(
                f"the images of job {parent.id} were deleted ({parent.delivery['files_expired']})"
            )
        return await asyncio.to_thread(load_image, record.path, what=f"image {index + 1}")

    async def open_remix(self, interaction: discord.Interaction, job_id: str) -> None:
        from bot.views import RemixModal

        parent = await self.store.get_job(job_id)
        if parent is None or parent.delivery.get("deleted") or parent.status != JobStatus.DONE:
            await interaction.response.send_message(
                f"job {job_id} was deleted or has no images, so it cannot be remixed",
                ephemeral=True,
            )
            return
        try:
            require_access(parent, interaction)  # the modal shows the job's prompt
        except UserInputError as exc:
            await interaction.response.send_message(str(exc), ephemeral=True)
            return
        prompt = parent.delivery.get("prompt") or parent.params.get("prompt", "")
        # The parent's parameters, minus its seed: a remix should give new images.
        summary = re.sub(r"--seed \d+\s*", "", parent.delivery.get("summary", "")).strip()
        count = int(parent.params.get("count") or 1)
        await interaction.response.send_modal(
            RemixModal(job_id, f"{prompt} {summary}".strip(), count, opened_by=interaction.id)
        )

    async def remix_submitted(
        self, interaction: discord.Interaction, job_id: str, prompt: str, image_field: str
    ) -> None:
        parent = await self.store.get_job(job_id)
        private = bool(parent and parent.delivery.get("private"))
        try:
            await self.acceptor.accept(interaction, ephemeral=private, press=True)
            count = int(parent.params.get("count") or 1) if parent else 1
            words = (image_field or "").lower().split()
            if not words:
                await self.derive(interaction, job_id, "reroll", prompt=prompt, deferred=True)
                return
            if not words[0].isdigit() or not 1 <= int(words[0]) <= count:
                raise UserInputError(
                    f"'vary image' must be a number from 1 to {count}, e.g. 2 or 2 strong"
                )
            strong = len(words) > 1 and words[1].startswith("str")
            await self.derive(
                interaction,
                job_id,
                "variation",
                index=int(words[0]) - 1,
                strong=strong,
                prompt=prompt,
                deferred=True,
            )
        except UserInputError as exc:
            await self.refuse(interaction, str(exc))

    async def delete(self, interaction: discord.Interaction, job_id: str) -> None:
        job = await self.store.get_job(job_id)
        if job is None:
            await interaction.response.send_message(f"there is no job {job_id}", ephemeral=True)
            return
        try:
            require_access(job, interaction)
            if interaction.user.id != job.user_id and not is_moderator(interaction):
                raise UserInputError(
                    "only the person who made this image or a moderator of its server can "
                    "delete it"
                )
        except UserInputError as exc:
            await interaction.response.send_message(str(exc), ephemeral=True)
            return
        await interaction.response.defer()
        await self.store.update_delivery(
            job_id, {"deleted": True, "deleted_by": interaction.user.id}
        )
        try:
            await interaction.delete_original_response()
        except discord.HTTPException as exc:
            await interaction.followup.send(
                f"could not delete the message ({exc.status})", ephemeral=True
            )

    async def reaction(self, payload: discord.RawReactionActionEvent) -> None:
        """Emoji shortcuts on a result: reroll, upscale image 1, vary image 1."""
        kind = REACTIONS.get(str(payload.emoji))
        if kind is None or payload.user_id == getattr(self.client.user, "id", None):
            return
        if payload.member is not None and payload.member.bot:
            return
        job_id = await self.store.get_value(f"{MESSAGE_KEY}{payload.message_id}")
        if job_id is None:
            return
        channel = self.client.get_partial_messageable(payload.channel_id, guild_id=payload.guild_id)
        actor = _ReactionActor(payload, self.client.get_channel(payload.channel_id) or channel)
        try:
            # Rate limit and cap first: a refused reaction posts no "queued..." placeholder.
            if not self.acceptor.check_reaction(payload.user_id):
                return  # over the limit and already told so in this window
            await self.acceptor.reserve(actor)
            parent = await self._usable_parent(actor, await self.store.get_job(job_id), job_id)  # type: ignore[arg-type]
            request, extra = await self._derived_request(
                parent, kind, 0 if kind != "reroll" else None, False, None
            )
            extra.update(
                await self._gate(  # type: ignore[arg-type]
                    actor, request.prompt, negative=request.negative_prompt, parent=parent
                )
            )
            placeholder = await channel.send(
                f"<@{payload.user_id}> {kind} of job `{job_id}` is queued\u2026",
                allowed_mentions=discord.AllowedMentions.none(),
            )
            extra["channel_message_id"] = placeholder.id
            await self._submit(
                actor,
                request,
                parent=parent,  # type: ignore[arg-type]
                parent_image_index=0 if kind != "reroll" else None,
                delivery={"private": False, **extra, "token": None},
            )
        except UserInputError as exc:
            await channel.send(
                f"<@{payload.user_id}> {exc}",
                delete_after=30,
                allowed_mentions=discord.AllowedMentions(users=[discord.Object(payload.user_id)]),
            )
        finally:
            await self.acceptor.answered(actor)

    # --- replies ----------------------------------------------------------------------------------

    async def refuse(self, interaction: discord.Interaction, message: str) -> None:
        """An ephemeral refusal after a defer: the public "thinking" message is removed."""
        await self.reply_error(interaction, message)

    async def reply_error(self, interaction: discord.Interaction, message: str) -> None:
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
        await self.acceptor.answered(interaction)  # told (or tried): nothing to recover

    # --- user commands ----------------------------------------------------------------------------

    async def queue_text(self, user_id: int) -> str:
        from bot import info

        return await info.queue_text(self, user_id)

    async def cancel(self, interaction: discord.Interaction, job_id: str | None) -> str:
        worker = self.services.worker
        if job_id is None:
            mine = await self.store.jobs_for_user(
                interaction.user.id, statuses=[JobStatus.QUEUED, JobStatus.RUNNING], limit=1
            )
            if not mine:
                return "you have no queued or running jobs"
            job_id = mine[0].id
        job_id = job_id.strip().lower()
        try:
            cancelled = await worker.cancel(job_id, user_id=interaction.user.id)
        except UserInputError as exc:
            return str(exc)
        if not cancelled:
            return f"job `{job_id}` is already finished (or being saved) and cannot be cancelled"
        job = await self.store.get_job(job_id)
        if job is not None:
            await self.progress.settle(job_id)
            self.progress.update(job, f"Cancelled by <@{interaction.user.id}>.", force=True)
        return f"job `{job_id}` cancelled"

    async def update_user_settings(self, user_id: int, **changes: Any) -> str:
        from dataclasses import replace

        current = await self.user_settings.get(user_id)
        updates = {k: v for k, v in changes.items() if v is not None}
        if updates:
            current = replace(current, **updates)
            await self.user_settings.set(user_id, current)
        return (
            f"Your defaults: aspect ratio **{current.aspect_ratio or 'model default'}**, "
            f"private replies **{'on' if current.private else 'off'}**, "
            f"style **{current.style or 'none'}**."
            + ("" if updates else " Set them with the options of /settings.")
        )

    async def show(self, interaction: discord.Interaction, job_id: str) -> None:
        from bot import info

        await info.show(self, interaction, job_id)

    async def provenance(self, interaction: discord.Interaction, image: discord.Attachment) -> None:
        """ "Who made this?": watermark, file hash or metadata, looked up in this store."""
        from moderation.provenance import lookup

        await defer_thinking(interaction, ephemeral=True)
        try:
            self.lookups.check(interaction.user.id, "provenance lookups")
            from bot.uploads import download_upload

            data = await download_upload(image, self.settings, what="the image")
            result = await lookup(self.store, data)
        except UserInputError as exc:
            await self.refuse(interaction, str(exc))
            return
        text = await self._provenance_text(interaction, result)
        await interaction.edit_original_response(
            content=text[:2000], allowed_mentions=discord.AllowedMentions.none()
        )

    async def _provenance_text(self, interaction: discord.Interaction, result: Any) -> str:
        """As much as the caller may know: the full report to the job's author and to moderators
        of the job's own server (a private job's prompt to its author only); a member of the
        same server gets who made it; anyone else only that this bot made it, elsewhere."""
        from moderation.provenance import format_lookup

        job = result.job
        if job is None:
            return (
                "No image made by this bot matches (no watermark, hash or metadata match).\n"
                + format_lookup(result)
            )
        if result.matched_by == "metadata":
            # Anyone can write a PNG text chunk: it proves nothing, so it names nobody.
            return (
                "This file's metadata claims it was made with this bot, but neither its hash "
                "nor a watermark confirms it; metadata can be forged, so nobody is named."
            )
        stored = await self.store.get_job(job["id"])
        private = bool(stored and stored.delivery.get("private"))
        author = job["user_id"] == interaction.user.id
        same_server = interaction.guild_id is not None and job.get("guild_id") == interaction.guild_id
        when = job.get("created_at_utc", "?")
        if author or (same_server and is_moderator(interaction) and not private):
            return format_lookup(result)
        if same_server:
            text = (
                f"Made with this bot by <@{job['user_id']}> (job `{job['id']}`, {job['kind']}, "
                f"{when}), matched by {result.matched_by}."
            )
            if not private:
                text += f"\nprompt: {(job.get('params') or {}).get('prompt', '?')}"
            return text
        return f"Made with this bot, in another server, on {when} (matched by {result.matched_by})."

    async def stats_text(self, guild_id: int | None) -> str:
        from bot import info

        return await info.stats_text(self, guild_id)


class _ReactionActor:
    """Just enough of an ``Interaction`` for ``_submit`` and the checks, for reaction shortcuts."""

    def __init__(self, payload: discord.RawReactionActionEvent, channel: Any) -> None:
        self.user = payload.member or discord.Object(payload.user_id)
        self.guild_id = payload.guild_id
        self.channel_id = payload.channel_id
        self.channel = channel
        self.extras: dict[str, Any] = {}
        self.application_id = None
        self.token = None
        self.filesize_limit = None


def _where(interaction: Any, parent: Job | None) -> tuple[int | None, int | None]:
    """The server and channel whose rules apply: where the user is, or for a button pressed in
    a DM, where its job was made."""
    if interaction.guild_id is None and parent is not None:
        return parent.guild_id, parent.channel_id
    return interaction.guild_id, interaction.channel_id


def _remix_changes(params: PromptParams) -> dict[str, Any]:
    """What an edited prompt changes in the parent's request (only what the user wrote)."""
    kwargs = params.request_kwargs()
    changes: dict[str, Any] = {
        "prompt": kwargs["prompt"],
        "negative_prompt": kwargs["negative_prompt"],
    }
    if params.aspect_ratio:
        changes.update(aspect_ratio=params.aspect_ratio, width=None, height=None)
    for name in ("steps", "guidance", "scheduler", "count"):
        if kwargs.get(name) is not None:
            changes[name] = kwargs[name]
    return changes


async def defer_thinking(interaction: discord.Interaction, *, ephemeral: bool) -> None:
    """Acknowledge at once (Discord allows 3 s) with a "thinking" message the job later edits."""
    interaction.extras["thinking"] = True
    interaction.extras["ephemeral"] = ephemeral
    await interaction.response.defer(ephemeral=ephemeral, thinking=True)
