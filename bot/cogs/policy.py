"""Moderator commands (``/policy ...``) and ``/provenance``.

The group is hidden from members without Manage Server (``default_permissions``), but server
admins can override that in Integrations, so every command checks the permission again.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.access import is_moderator
from bot.gate import policy_for
from bot.replies import defer_thinking, reply_error
from bot.uploads import download_upload
from core.errors import UserInputError
from moderation import audit
from moderation.policy import FIELDS, Policy, channel_overrides, update_policy
from moderation.provenance import format_lookup, lookup

if TYPE_CHECKING:
    from bot.client import ImagineBot

# Fields that take one value; the list fields have their own add/remove commands.
LIST_FIELDS = ("banned_terms", "banned_regexes", "allowlist", "public_figures")
SCALAR_FIELDS = [f for f in FIELDS if f not in LIST_FIELDS]


class PolicyGroup(
    app_commands.Group,
    name="policy",
    description="Moderation settings for this server",
    default_permissions=discord.Permissions(manage_guild=True),
    guild_only=True,
):
    def __init__(self, bot: ImagineBot) -> None:
        super().__init__()
        self.bot = bot

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if is_moderator(interaction):
            return True
        await interaction.response.send_message(
            "only moderators (Manage Server permission) can change this server's policy",
            ephemeral=True,
        )
        return False

    @property
    def store(self) -> Any:
        return self.bot.services.store

    @property
    def guild_settings(self) -> Any:
        return self.bot.guild_settings

    async def _answer(self, interaction: discord.Interaction, text: str) -> None:
        await interaction.response.send_message(text[:2000], ephemeral=True)

    async def _update(
        self, interaction: discord.Interaction, channel_id: int | None, **changes: Any
    ) -> None:
        try:
            policy = await update_policy(
                self.store,
                interaction.guild_id,
                channel_id,
                interaction.user.id,
                base=Policy.default(self.bot.services.settings),
                **changes,
            )
        except UserInputError as exc:
            await self._answer(interaction, str(exc))
            return
        where = f"<#{channel_id}>" if channel_id else "this server"
        shown = {k: getattr(policy, k) for k in changes}
        await self._answer(interaction, f"Policy for {where} updated: {_fmt(shown)}")

    @app_commands.command(name="show", description="Show the effective policy")
    @app_commands.describe(channel="Show a channel's policy (with its overrides)")
    async def show(
        self, interaction: discord.Interaction, channel: discord.TextChannel | None = None
    ) -> None:
        channel_id = channel.id if channel else None
        policy = await policy_for(
            self.store, self.bot.services.settings, interaction.guild_id, channel_id
        )
        lines = [f"**Policy for {channel.mention if channel else 'this server'}**"]
        overrides = (
            await channel_overrides(self.store, interaction.guild_id, channel_id)
            if channel_id
            else {}
        )
        for name, info in type(policy).model_fields.items():
            mark = " (channel override)" if name in overrides else ""
            lines.append(
                f"`{name}` = {_value(getattr(policy, name))}{mark} \u2014 {info.description}"
            )
        guild = await self.guild_settings.get(interaction.guild_id)
        log_channel = f"<#{guild.log_channel_id}>" if guild.log_channel_id else "not set"
        lines.append(f"moderation log: {log_channel}; role weights: {guild.role_weights or 'none'}")
        lines.append(
            f"user caps: {guild.user_caps or 'none'}; banned users: {len(guild.banned_user_ids)}"
        )
        await self._answer(interaction, "\n".join(lines))

    @app_commands.command(name="set", description="Change one policy setting")
    @app_commands.describe(
        field="Which setting", value="New value", channel="Only for this channel (an override)"
    )
    @app_commands.choices(field=[app_commands.Choice(name=f, value=f) for f in SCALAR_FIELDS])
    async def set_(
        self,
        interaction: discord.Interaction,
        field: str,
        value: str,
        channel: discord.TextChannel | None = None,
    ) -> None:
        await self._update(interaction, channel.id if channel else None, **{field: value})

    async def _edit_list(
        self, interaction: discord.Interaction, field: str, term: str, add: bool
    ) -> None:
        policy = await policy_for(
            self.store, self.bot.services.settings, interaction.guild_id, None
        )
        current = list(getattr(policy, field))
        term = term.strip()
        if add:
            current.append(term)
        elif term in current:
            current.remove(term)
        else:
            await self._answer(interaction, f"{term!r} is not in {field}")
            return
        await self._update(interaction, None, **{field: current})

    @app_commands.command(name="ban", description="Block prompts containing a word or phrase")
    async def ban(self, interaction: discord.Interaction, term: str) -> None:
        await self._edit_list(interaction, "banned_terms", term, True)

    @app_commands.command(name="unban", description="Remove a banned word or phrase")
    async def unban(self, interaction: discord.Interaction, term: str) -> None:
        await self._edit_list(interaction, "banned_terms", term, False)

    @app_commands.command(name="allow", description="Allow a phrase that a rule would block")
    async def allow(self, interaction: discord.Interaction, term: str) -> None:
        await self._edit_list(interaction, "allowlist", term, True)

    @app_commands.command(name="disallow", description="Remove a phrase from the allowlist")
    async def disallow(self, interaction: discord.Interaction, term: str) -> None:
        await self._edit_list(interaction, "allowlist", term, False)

    @app_commands.command(name="role-weight", description="A role's share of the GPU (1 = normal)")
    async def role_weight(
        self,
        interaction: discord.Interaction,
        role: discord.Role,
        weight: app_commands.Range[float, 0.1, 10.0],
    ) -> None:
        guild = await self.guild_settings.get(interaction.guild_id)
        weights = {**guild.role_weights, str(role.id): float(weight)}
        if weight == 1.0:
            weights.pop(str(role.id))
        await self.guild_settings.update(interaction.guild_id, role_weights=weights)
        await self._answer(interaction, f"{role.mention} now has weight {weight:g} in the queue")

    @app_commands.command(name="user-cap", description="Most jobs one user may have waiting")
    async def user_cap(
        self,
        interaction: discord.Interaction,
        user: discord.User,
        cap: app_commands.Range[int, 0, 100],
    ) -> None:
        guild = await self.guild_settings.get(interaction.guild_id)
        caps = {**guild.user_caps, str(user.id): int(cap)}
        await self.guild_settings.update(interaction.guild_id, user_caps=caps)
        await self._answer(interaction, f"{user.mention} may now have at most {cap} jobs waiting")

    @app_commands.command(name="ban-user", description="Stop a user from using the bot here")
    async def ban_user(self, interaction: discord.Interaction, user: discord.User) -> None:
        guild = await self.guild_settings.get(interaction.guild_id)
        banned = list(dict.fromkeys([*guild.banned_user_ids, user.id]))
        await self.guild_settings.update(interaction.guild_id, banned_user_ids=banned)
        await self._answer(interaction, f"{user.mention} can no longer use the bot on this server")

    @app_commands.command(name="unban-user", description="Let a banned user use the bot again")
    async def unban_user(self, interaction: discord.Interaction, user: discord.User) -> None:
        guild = await self.guild_settings.get(interaction.guild_id)
        banned = [u for u in guild.banned_user_ids if u != user.id]
        await self.guild_settings.update(interaction.guild_id, banned_user_ids=banned)
        await self._answer(interaction, f"{user.mention} may use the bot again")

    @app_commands.command(name="log-channel", description="Where blocked prompts are reported")
    async def log_channel(
        self, interaction: discord.Interaction, channel: discord.TextChannel | None = None
    ) -> None:
        await self.guild_settings.update(
            interaction.guild_id, log_channel_id=channel.id if channel else None
        )
        where = channel.mention if channel else "nowhere (off)"
        await self._answer(interaction, f"Blocked prompts are now reported to {where}")

    @app_commands.command(name="audit", description="Recent moderation decisions")
    async def audit_(
        self,
        interaction: discord.Interaction,
        user: discord.User | None = None,
        limit: app_commands.Range[int, 1, 25] = 10,
    ) -> None:
        entries = await audit.list_entries(
            self.store, interaction.guild_id, limit=limit, user_id=user.id if user else None
        )
        if not entries:
            await self._answer(interaction, "No moderation decisions recorded yet.")
            return
        lines = []
        for e in entries:
            when = dt.datetime.fromtimestamp(e.at, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
            job = f" job `{e.job_id}`" if e.job_id else ""
            lines.append(
                f"`{when}` {e.action} ({e.stage}) <@{e.user_id}>{job}: "
                f"{', '.join(e.categories) or '-'} \u2014 {e.reason[:120]}"
            )
        await self._answer(interaction, "\n".join(lines))


class PolicyCog(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="provenance", description="Who made this image? (watermark look-up)")
    @app_commands.describe(image="An image made by this bot")
    async def provenance(self, interaction: discord.Interaction, image: discord.Attachment) -> None:
        """ "Who made this?": watermark, file hash or metadata, looked up in this store."""
        await defer_thinking(interaction, ephemeral=True)
        try:
            self.bot.lookups.check(interaction.user.id, "provenance lookups")
            settings = self.bot.services.settings
            data = await download_upload(image, settings, what="the image")
            result = await lookup(self.bot.services.store, data)
        except UserInputError as exc:
            await reply_error(interaction, str(exc), self.bot.acceptor)
            return
        text = await self._provenance_text(interaction, result)
        await interaction.edit_original_response(
            content=text[:2000], allowed_mentions=discord.AllowedMentions.none()
        )

    async def _provenance_text(self, interaction: discord.Interaction, result: Any) -> str:
        """As much as the caller may know: the full report to the job's author and to moderators
        of the job's own server (a private job's prompt to its author only); a member of the
        same server gets who made it; anyone else only that this bot made it, elsewhere."""
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
        stored = await self.bot.services.store.get_job(job["id"])
        private = bool(stored and stored.delivery.get("private"))
        author = job["user_id"] == interaction.user.id
        guild_id = interaction.guild_id
        same_server = guild_id is not None and job.get("guild_id") == guild_id
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


def _value(value: Any) -> str:
    if isinstance(value, tuple):
        return ", ".join(value) if value else "(none)"
    return f"`{value}`"


def _fmt(values: dict[str, Any]) -> str:
    return ", ".join(
        f"`{k}` = {json.dumps(v) if isinstance(v, tuple) else v}" for k, v in values.items()
    )


async def setup(bot: ImagineBot) -> None:
    bot.tree.add_command(PolicyGroup(bot))
    await bot.add_cog(PolicyCog(bot))
