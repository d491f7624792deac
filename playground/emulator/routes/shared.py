"""What the route groups share: finding channels and messages as Discord would, and writing
messages under Discord's rules, so every route that reaches a message answers the same errors."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ..rules import (
    INVALID_WEBHOOK_TOKEN,
    MISSING_PERMISSIONS,
    UNKNOWN_CHANNEL,
    UNKNOWN_MESSAGE,
    UNKNOWN_WEBHOOK,
    ApiError,
    check_message,
    unknown,
)
from ..state import (
    EPHEMERAL,
    LOADING,
    Attachment,
    Channel,
    Interaction,
    Message,
    RecordedFile,
    RecordedRequest,
    User,
    guess_content_type,
)

if TYPE_CHECKING:
    from ..core import EmulatorCore


class RouteGroup:
    """A set of handlers over one emulator; `Rest` registers their bound methods."""

    def __init__(self, emu: EmulatorCore, messages: Messages) -> None:
        self.emu = emu
        self.world = emu.world
        self.messages = messages


class Messages:
    """One place for the message rules, so a route reached by token and one reached by channel
    cannot drift apart in what they accept or answer."""

    def __init__(self, emu: EmulatorCore) -> None:
        self.emu = emu
        self.world = emu.world

    # -- finding ----------------------------------------------------------------------------
    def channel(self, channel_id: str) -> Channel:
        channel = self.world.channels.get(int(channel_id))
        if channel is None or channel.deleted:
            raise unknown("Channel", UNKNOWN_CHANNEL)
        return channel

    def message(self, message_id: str, channel_id: int | None = None) -> Message:
        """A live message; through a channel route (channel_id given) ephemeral ones are
        invisible, as they are on Discord: only the interaction token reaches them. A deleted
        channel takes its messages with it, so webhook routes (the interaction token) answer
        10008 for them, as Discord does."""
        msg = self.emu.store.get(int(message_id)) if message_id.isdigit() else None
        if msg is None or msg.deleted or (channel_id is not None and (
                msg.channel_id != channel_id or msg.ephemeral)):
            raise unknown("Message", UNKNOWN_MESSAGE)
        channel = self.world.channels.get(msg.channel_id)
        if channel is not None and channel.deleted:
            raise unknown("Message", UNKNOWN_MESSAGE)
        return msg

    def require(self, channel: Channel, perms: int) -> None:
        have = self.world.channel_permissions(self.world.bot, channel)
        if have & perms != perms:
            raise ApiError(403, MISSING_PERMISSIONS, "Missing Permissions")

    def interaction_by_token(self, app_id: str, token: str,
                             record: RecordedRequest) -> Interaction:
        """The interaction behind a webhook route, with the token's rules: 15 minutes, and no
        follow-up before the initial callback."""
        inter = self.emu.tokens.get(token)
        if inter is None or app_id != str(self.world.application_id):
            raise unknown("Webhook", UNKNOWN_WEBHOOK)
        record.interaction_id = inter.id
        if self.emu.clock.now() - inter.created_at > self.emu.token_lifetime:
            raise ApiError(401, INVALID_WEBHOOK_TOKEN, "Invalid Webhook Token")
        if not inter.acknowledged:
            raise unknown("Webhook", UNKNOWN_WEBHOOK)
        return inter

    # -- writing ----------------------------------------------------------------------------
    async def create(self, channel_id: int, guild_id: int | None, payload: dict[str, Any],
                     files: list[RecordedFile], *, interaction: Interaction | None = None,
                     extra_flags: int = 0) -> Message:
        check_message(payload, files, self._upload_limit(channel_id))
        msg = Message(
            id=self.emu.ids.next(), channel_id=channel_id, guild_id=guild_id,
            author=self.world.bot, content=payload.get("content") or "",
            embeds=payload.get("embeds") or [], components=payload.get("components") or [],
            flags=(int(payload.get("flags") or 0) & EPHEMERAL) | extra_flags,
            created_at=self.emu.clock.now(),
            interaction_id=interaction.id if interaction else None,
            webhook_id=self.world.application_id if interaction else None,
        )
        if interaction is not None:
            msg.interaction_meta = {
                "id": str(interaction.id), "type": interaction.type,
                "user": interaction.user.payload(),
                "authorizing_integration_owners": {"0": str(interaction.guild_id or 0)},
            }
        msg.mentions = self._mentions(msg.content, payload.get("allowed_mentions"))
        msg.attachments = self._attachments(payload, files, [], channel_id) or []
        await self.emu._add_message(msg)
        return msg

    async def edit(self, msg: Message, payload: dict[str, Any],
                   files: list[RecordedFile]) -> Message:
        check_message(payload, files, self._upload_limit(msg.channel_id))
        if "content" in payload:
            msg.content = payload["content"] or ""
            msg.mentions = self._mentions(msg.content, payload.get("allowed_mentions"))
        if "embeds" in payload:
            msg.embeds = payload["embeds"] or []
        if "components" in payload:
            msg.components = payload["components"] or []
        if "flags" in payload and payload["flags"] is not None:
            msg.flags = (msg.flags & EPHEMERAL) | (int(payload["flags"]) & ~EPHEMERAL & ~LOADING)
        attachments = self._attachments(payload, files, msg.attachments, msg.channel_id)
        if attachments is not None:
            msg.attachments = attachments
        msg.flags &= ~LOADING
        msg.edited_at = self.emu.clock.now()
        msg.edit_times.append(msg.edited_at)
        await self.emu._message_changed(msg)
        return msg

    def _mentions(self, content: str, allowed: dict[str, Any] | None) -> list[User]:
        """Who a message pings: the <@id> in its content that allowed_mentions lets through."""
        ids = [int(m) for m in re.findall(r"<@!?(\d+)>", content)]
        if allowed is not None and "users" not in (allowed.get("parse") or []):
            permitted = {int(u) for u in allowed.get("users") or []}
            ids = [i for i in ids if i in permitted]
        seen: dict[int, User] = {}
        for uid in ids:
            if uid in self.world.users:
                seen.setdefault(uid, self.world.users[uid])
        return list(seen.values())

    def _upload_limit(self, channel_id: int) -> int:
        channel = self.world.channels.get(channel_id)
        if channel is None or channel.guild_id is None:
            return self.emu.default_upload_limit
        return self.world.guilds[channel.guild_id].attachment_size_limit

    def _attachments(self, payload: dict[str, Any], files: list[RecordedFile],
                     existing: list[Attachment], channel_id: int) -> list[Attachment] | None:
        """Resolve the `attachments` list: indexes name new files, snowflakes keep old ones."""
        by_field = {f.field: f for f in files}
        listed = payload.get("attachments")
        if listed is None:
            new = [self._store_file(f, None, channel_id) for f in files]
            return (existing + new) if new else None
        out: list[Attachment] = []
        kept = {str(a.id): a for a in existing}
        for entry in listed:
            key = str(entry.get("id"))
            if f"files[{key}]" in by_field:
                out.append(self._store_file(by_field[f"files[{key}]"], entry, channel_id))
            elif key in kept:
                out.append(kept[key])
        return out

    def _store_file(self, f: RecordedFile, entry: dict[str, Any] | None,
                    channel_id: int) -> Attachment:
        filename = (entry or {}).get("filename") or f.filename
        return self.emu._new_attachment(
            filename, f.data, content_type=guess_content_type(filename),
            description=(entry or {}).get("description"), channel_id=channel_id)
