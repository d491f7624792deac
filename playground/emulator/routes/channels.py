"""Channel routes: the bot's posts, edits, deletions and reactions outside an interaction, with
the channel's permissions and closed DMs enforced."""

from __future__ import annotations

from typing import Any

from ..rules import ApiError
from ..state import (
    ATTACH_FILES,
    EPHEMERAL,
    MANAGE_MESSAGES,
    SEND_MESSAGES,
    VIEW_CHANNEL,
    RecordedRequest,
)
from .shared import RouteGroup


class ChannelRoutes(RouteGroup):
    async def get_channel(self, record: RecordedRequest, channel_id: str) -> Any:
        return self.messages.channel(channel_id).payload()

    async def get_history(self, record: RecordedRequest, channel_id: str) -> Any:
        channel = self.messages.channel(channel_id)
        limit = int(record.query.get("limit", 50))
        msgs = [m for m in self.emu.messages_in(channel.id, include_ephemeral=False)]
        return [m.payload(self.emu.clock) for m in reversed(msgs)][:limit]

    async def create_message(self, record: RecordedRequest, channel_id: str) -> Any:
        channel = self.messages.channel(channel_id)
        if channel.recipient is not None and channel.recipient.dms_closed:
            raise ApiError(403, 50007, "Cannot send messages to this user")
        self.messages.require(
            channel, VIEW_CHANNEL | SEND_MESSAGES | (ATTACH_FILES if record.files else 0))
        payload = dict(record.json or {})
        payload["flags"] = int(payload.get("flags") or 0) & ~EPHEMERAL  # only interactions may
        msg = await self.messages.create(channel.id, channel.guild_id, payload, record.files)
        return msg.payload(self.emu.clock)

    async def get_message(self, record: RecordedRequest, channel_id: str, message_id: str) -> Any:
        channel = self.messages.channel(channel_id)
        return self.messages.message(message_id, channel.id).payload(self.emu.clock)

    async def edit_message(self, record: RecordedRequest, channel_id: str, message_id: str) -> Any:
        channel = self.messages.channel(channel_id)
        msg = self.messages.message(message_id, channel.id)
        if msg.author.id != self.world.bot.id:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        await self.messages.edit(msg, record.json or {}, record.files)
        return msg.payload(self.emu.clock)

    async def delete_message(self, record: RecordedRequest, channel_id: str,
                             message_id: str) -> Any:
        channel = self.messages.channel(channel_id)
        msg = self.messages.message(message_id, channel.id)
        if msg.author.id != self.world.bot.id:
            self.messages.require(channel, MANAGE_MESSAGES)
        await self.emu._delete_message(msg)
        return None

    async def typing(self, record: RecordedRequest, channel_id: str) -> Any:
        self.messages.channel(channel_id)
        return None

    async def add_reaction(self, record: RecordedRequest, channel_id: str, message_id: str,
                           emoji: str) -> Any:
        channel = self.messages.channel(channel_id)
        msg = self.messages.message(message_id, channel.id)
        msg.reactions.setdefault(emoji, set()).add(self.world.bot.id)
        return None

    async def remove_reaction(self, record: RecordedRequest, channel_id: str, message_id: str,
                              emoji: str, user_id: str) -> Any:
        channel = self.messages.channel(channel_id)
        msg = self.messages.message(message_id, channel.id)
        uid = self.world.bot.id if user_id == "@me" else int(user_id)
        if uid != self.world.bot.id:
            self.messages.require(channel, MANAGE_MESSAGES)
        msg.reactions.get(emoji, set()).discard(uid)
        return None
