"""Turning a request into a queued job: parse, gate, caps, submit, in that order on every path.

/imagine, the buttons, the remix modal and reaction shortcuts all end here so that each applies
the same rules: defer first (Discord's 3 seconds, ``bot/accept.py``), then input checks, the
prompt gate under the channel's policy, the user's caps, and finally ``worker.submit`` (the job
row is committed before the user sees "queued"). Every refusal is a ``UserInputError`` the
caller turns into an ephemeral message; nothing raises to Discord.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import discord

from bot import gate
from bot.access import is_nsfw
from bot.params import PromptParams, ignored_by_model, parse_aspect_ratio, parse_prompt
from bot.permutations import expand_permutations
from bot.replies import BANNED, NO_WORKER, reply_error
from bot.uploads import read_upload
from core.errors import UserInputError
from generation.request import GenerationRequest

if TYPE_CHECKING:
    from bot.accept import Acceptor
    from bot.services import Services
    from bot.settings_store import GuildSettingsStore, UserSettingsStore
    from core.jobs import Job


class Submitter:
    """The checks and the submit shared by every way of asking for images."""

    def __init__(
        self,
        client: discord.Client,
        services: Services,
        *,
        acceptor: Acceptor,
        guild_settings: GuildSettingsStore,
        user_settings: UserSettingsStore,
    ) -> None:
        self.client = client
        self.services = services
        self.settings = services.settings
        self.store = services.store
        self.acceptor = acceptor
        self.guild_settings = guild_settings
        self.user_settings = user_settings

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
        press: bool = False,
    ) -> None:
        """/imagine, also when replayed after a restart (``bot/accept.py``) and from a button
        that carries a prompt (``press``: rate-limited like other presses, e.g. /describe's).

        A prompt with ``{a, b}`` groups becomes one job per combination (Midjourney's
        permutations): every one is parsed and gated before any is queued, so a refusal of one
        queues none.
        """
        defaults = await self.user_settings.get(interaction.user.id)
        private = defaults.private if private is None else private
        try:
            await self.acceptor.accept(interaction, ephemeral=private, press=press)
            texts = expand_permutations(prompt, self.settings.discord.max_permutations)
            init_image = await read_upload(image, self.settings) if image is not None else None
            options = {
                "aspect_ratio": aspect_ratio or defaults.aspect_ratio,
                "seed": seed,
                "negative": negative,
                "quality": quality,
                "steps": steps,
                "style": style or defaults.style,
            }
            prepared = [
                await self._prepare(interaction, text, init_image, options) for text in texts
            ]
            if len(prepared) == 1:
                request, delivery = prepared[0]
                await self.submit(interaction, request, delivery={"private": private, **delivery})
            else:
                await self._submit_permutations(interaction, prepared, private)
        except UserInputError as exc:
            await reply_error(interaction, str(exc), self.acceptor)

    async def _prepare(
        self,
        interaction: discord.Interaction,
        text: str,
        init_image: Any,
        options: dict[str, Any],
    ) -> tuple[GenerationRequest, dict[str, Any]]:
        """One prompt's request and delivery fields: parsed, merged with the options, gated."""
        params = self._merge_options(self.parse(text), **options)
        # The texts the model gets (styles expanded), each gated: prompt and negative.
        kwargs = params.request_kwargs()
        flags = await self.gate(
            interaction, kwargs["prompt"], init_image, negative=kwargs["negative_prompt"]
        )
        request = GenerationRequest(**kwargs, init_image=init_image)
        if params.quality is not None:
            request = self._apply_quality(request, params.quality)
        delivery = {"prompt": params.prompt, "summary": params.summary(), **flags}
        note = self.unused_by_model(params)
        if note:
            delivery["note"] = note
        return request, delivery

    def unused_by_model(self, params: PromptParams) -> str | None:
        """What the loaded model ignores of what the user asked (Turbo models: no guidance),
        said in the reply rather than dropped silently."""
        engine = self.services.engine
        guidance = params.effective_guidance()
        if guidance is None:
            guidance = self.settings.model.default_guidance
        if guidance is None:
            guidance = engine.defaults.guidance
        return ignored_by_model(params, guidance)

    async def _submit_permutations(
        self,
        interaction: discord.Interaction,
        prepared: list[tuple[GenerationRequest, dict[str, Any]]],
        private: bool,
    ) -> None:
        """One job per combination: the first answers in the interaction's message, each other
        one in a follow-up of its own. Only the last job replaces the accepted interaction, so a
        crash half-way is replayed, and the replay skips the combinations already queued."""
        queued: set[int] = set()
        if interaction.extras.get("replayed"):  # only a replay can find some already queued
            queued = await self.store.permutations_queued(interaction.id)
        total = len(prepared)
        for k, (request, delivery) in enumerate(prepared):
            if k in queued:
                continue
            extra: dict[str, Any] = {"private": private, **delivery, "permutation": k}
            try:
                if k > 0:
                    message = await interaction.followup.send(
                        f"`{k + 1}/{total}` **{delivery['prompt'][:1800]}** is queued\u2026",
                        wait=True,
                        ephemeral=private,
                    )
                    extra["message_id"] = message.id
                else:
                    # Fill the "thinking..." message before any follow-up: Discord puts the
                    # first follow-up of a deferred interaction into it, where job 1 answers.
                    await interaction.edit_original_response(
                        content=f"`1/{total}` **{delivery['prompt'][:1800]}** is queued\u2026"
                    )
                await self.submit(
                    interaction, request, delivery=extra, replaces_accepted=k == total - 1
                )
            except UserInputError as exc:
                if k == 0:
                    raise  # nothing queued yet: the usual refusal
                await interaction.followup.send(
                    f"{k} of {total} prompts were queued; the rest were not: {exc}",
                    ephemeral=True,
                )
                await self.acceptor.forget(interaction)
                return

    def parse(self, prompt: str) -> PromptParams:
        """A prompt with its inline ``--parameters``, under the instance's limits."""
        model = self.settings.model
        return parse_prompt(
            prompt,
            max_chars=model.max_prompt_chars,
            max_steps=model.max_steps,
            max_count=model.max_count,
        )

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
        return replace(params, **changes) if changes else params

    def _apply_quality(self, request: GenerationRequest, quality: float) -> GenerationRequest:
        """``--q`` scales the model's default steps (Midjourney: .25 draft ... 2 high)."""
        if request.steps is not None:
            return request
        base = self.services.engine.defaults.steps
        steps = max(1, min(self.settings.model.max_steps, round(base * quality)))
        return request.replace(steps=steps)

    async def banned(self, guild_id: int | None, user_id: int) -> bool:
        settings = await self.guild_settings.get(guild_id)
        return user_id in settings.banned_user_ids

    async def gate(
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
        guild_id, channel_id = where(interaction, parent)
        if await self.banned(guild_id, interaction.user.id):
            raise UserInputError(BANNED)
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
            guild = await self.guild_settings.get(interaction.guild_id)
            await gate.post_to_mod_log(
                self.client, guild.log_channel_id, interaction, shown, decision
            )
            raise UserInputError(f"your prompt was blocked. {decision.reason}")
        return {"nsfw_channel": nsfw, "spoiler": decision.action == "spoiler"}

    async def submit(
        self,
        interaction: discord.Interaction,
        request: GenerationRequest,
        *,
        delivery: dict[str, Any],
        parent: Job | None = None,
        parent_image_index: int | None = None,
        replaces_accepted: bool = True,
    ) -> Job:
        """Queue the job under the user's cap, weighted by their roles, credited to everyone
        whose work it builds on."""
        worker = self.services.worker
        if worker is None:
            raise UserInputError(NO_WORKER)
        guild_id, _ = where(interaction, parent)
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
                guild.weight_for(roles),
                role_name_weight(self.settings, (r.name for r in member_roles)),
            ),
            delivery=interaction_delivery(
                interaction, replaces_accepted=replaces_accepted, **delivery
            ),
            reservation=reservation,
        )


def role_name_weight(settings: Any, role_names: Iterable[str]) -> float:
    """The fair-share weight of a member from the instance's ``queue.role_weights`` (by role
    name, Discord's): their best role's, 1.0 when none is listed."""
    weights = settings.queue.role_weights
    return max((weights[r] for r in role_names if r in weights), default=1.0)


def where(interaction: Any, parent: Job | None) -> tuple[int | None, int | None]:
    """The server and channel whose rules apply: where the user is, or for a button pressed in
    a DM, where its job was made."""
    if interaction.guild_id is None and parent is not None:
        return parent.guild_id, parent.channel_id
    return interaction.guild_id, interaction.channel_id


def interaction_delivery(
    interaction: discord.Interaction, *, replaces_accepted: bool = True, **extra: Any
) -> dict[str, Any]:
    """What delivery needs to answer through this interaction later, even after a restart.

    ``replaces_accepted``: the job stands for the accepted interaction from now on (its record
    is dropped when the job is stored); False for all but the last job of a permutation."""
    extras = getattr(interaction, "extras", None) or {}
    data: dict[str, Any] = {
        "application_id": interaction.application_id,
        "token": interaction.token,
        # Local clock (immune to skew in the snowflake); when it was first accepted, if replayed.
        "created_at": extras.get("accepted_at") or time.time(),
        "filesize_limit": interaction.filesize_limit,
    }
    if extras.get("accepted") and replaces_accepted:
        data["interaction_id"] = interaction.id  # the job replaces its accepted record
    elif extras.get("accepted"):
        data["permutation_of"] = interaction.id
    data.update(extra)
    return data
