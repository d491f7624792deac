"""Read-mostly routes discord.py calls to learn who it is and where: the bot user, other users,
DM channels, the application, the gateway's address, guilds, roles and members."""

from __future__ import annotations

from typing import Any

from ..rules import unknown
from ..state import Guild, RecordedRequest
from .shared import RouteGroup


class DirectoryRoutes(RouteGroup):
    # -- identity & gateway -----------------------------------------------------------------
    async def get_me(self, record: RecordedRequest) -> Any:
        return self.world.bot.payload() | {"verified": True, "mfa_enabled": False}

    async def get_user(self, record: RecordedRequest, user_id: str) -> Any:
        user = self.world.users.get(int(user_id)) if user_id.isdigit() else None
        if user is None:
            raise unknown("User", 10013)
        return user.payload()

    async def create_dm(self, record: RecordedRequest) -> Any:
        uid = str((record.json or {}).get("recipient_id", ""))
        user = self.world.users.get(int(uid)) if uid.isdigit() else None
        if user is None:
            raise unknown("User", 10013)
        return self.world.dm_channel(user).payload()

    async def get_application(self, record: RecordedRequest) -> Any:
        return self.world.application_payload()

    async def get_gateway(self, record: RecordedRequest) -> Any:
        return {"url": self.emu.gateway_url}

    async def get_gateway_bot(self, record: RecordedRequest) -> Any:
        return {"url": self.emu.gateway_url, "shards": 1,
                "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0,
                                        "max_concurrency": 1}}

    # -- guilds -----------------------------------------------------------------------------
    def _guild(self, guild_id: str) -> Guild:
        guild = self.world.guilds.get(int(guild_id)) if guild_id.isdigit() else None
        if guild is None:
            raise unknown("Guild", 10004)
        return guild

    async def get_guild(self, record: RecordedRequest, guild_id: str) -> Any:
        payload = self.world.guild_payload(self._guild(guild_id))
        for key in ("members", "channels", "threads", "presences", "voice_states"):
            payload.pop(key, None)
        return payload

    async def get_guild_channels(self, record: RecordedRequest, guild_id: str) -> Any:
        return [c.payload() for c in self._guild(guild_id).channels.values() if not c.deleted]

    async def get_roles(self, record: RecordedRequest, guild_id: str) -> Any:
        return [r.payload() for r in self._guild(guild_id).roles.values()]

    async def get_member(self, record: RecordedRequest, guild_id: str, user_id: str) -> Any:
        guild = self._guild(guild_id)
        if not user_id.isdigit() or int(user_id) not in guild.member_ids:
            raise unknown("Member", 10007)
        return self.world.member_payload(self.world.users[int(user_id)], guild)
