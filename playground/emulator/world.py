"""Who and where: the guilds, channels, roles and users of an emulated Discord, and permissions.

The default world is what the bot's end-to-end tests need: one server with a normal channel, an
age-restricted (nsfw) channel, a moderation-log channel, a channel where the bot may not post, a
moderator and two ordinary users.
"""

from __future__ import annotations

from typing import Any

from .state import (
    ADMINISTRATOR,
    ALL_PERMISSIONS,
    ATTACH_FILES,
    BOT_DEFAULT,
    DEFAULT_UPLOAD_LIMIT,
    EVERYONE_DEFAULT,
    MANAGE_GUILD,
    MANAGE_MESSAGES,
    SEND_MESSAGES,
    Channel,
    Clock,
    Guild,
    Role,
    Snowflakes,
    User,
)


class World:
    def __init__(self, clock: Clock, ids: Snowflakes, *, bot_name: str = "imagine-bot") -> None:
        self.clock = clock
        self.ids = ids
        self.users: dict[int, User] = {}
        self.guilds: dict[int, Guild] = {}
        self.channels: dict[int, Channel] = {}
        self.roles: dict[int, Role] = {}
        self.bot = self.add_user(bot_name, bot=True)
        self.application_id = self.bot.id  # Discord bots share the id of their application
        self.bot_role_ids: dict[int, int] = {}

    # -- building ---------------------------------------------------------------------------
    def add_user(self, name: str, *, bot: bool = False, roles: list[Role] | None = None,
                 guild: Guild | None = None) -> User:
        user = User(id=self.ids.next(), name=name, bot=bot, roles=[r.id for r in roles or []])
        self.users[user.id] = user
        for g in [guild] if guild else list(self.guilds.values()):
            if user.id not in g.member_ids:
                g.member_ids.append(user.id)
        return user

    def add_guild(self, name: str, *, owner: User | None = None,
                  attachment_size_limit: int = DEFAULT_UPLOAD_LIMIT,
                  bot_permissions: int = BOT_DEFAULT) -> Guild:
        gid = self.ids.next()
        owner_id = owner.id if owner else self.bot.id
        guild = Guild(id=gid, name=name, owner_id=owner_id,
                      attachment_size_limit=attachment_size_limit)
        guild.roles[gid] = Role(id=gid, name="@everyone", permissions=EVERYONE_DEFAULT)
        self.guilds[gid] = guild
        self.roles[gid] = guild.roles[gid]
        bot_role = self.add_role(guild, self.bot.name, bot_permissions)
        self.bot_role_ids[gid] = bot_role.id
        self.bot.roles.append(bot_role.id)
        guild.member_ids.append(self.bot.id)
        if owner and owner.id not in guild.member_ids:
            guild.member_ids.append(owner.id)
        return guild

    def add_role(self, guild: Guild, name: str, permissions: int) -> Role:
        role = Role(id=self.ids.next(), name=name, permissions=permissions,
                    position=len(guild.roles))
        guild.roles[role.id] = role
        self.roles[role.id] = role
        return role

    def add_channel(self, guild: Guild, name: str, *, nsfw: bool = False,
                    bot_denied: int = 0) -> Channel:
        channel = Channel(id=self.ids.next(), guild_id=guild.id, name=name, nsfw=nsfw,
                          bot_denied=bot_denied, position=len(guild.channels))
        guild.channels[channel.id] = channel
        self.channels[channel.id] = channel
        return channel

    def dm_channel(self, user: User) -> Channel:
        """The bot's DM channel with a user, created on first use like Discord's."""
        for channel in self.channels.values():
            if channel.recipient is user:
                return channel
        channel = Channel(id=self.ids.next(), guild_id=None, name=f"dm-{user.name}", type=1,
                          recipient=user)
        self.channels[channel.id] = channel
        return channel

    def build_default(self) -> None:
        """One server with the channels and people the bot's end-to-end tests talk about."""
        guild = self.add_guild("Test Server")
        self.guild = guild
        self.moderator_role = self.add_role(guild, "Moderator", MANAGE_GUILD | MANAGE_MESSAGES)
        self.artist_role = self.add_role(guild, "Artist", 0)
        self.general = self.add_channel(guild, "general")
        self.nsfw_channel = self.add_channel(guild, "nsfw-art", nsfw=True)
        self.mod_log = self.add_channel(guild, "mod-log")
        self.locked_channel = self.add_channel(guild, "no-bot-posting",
                                               bot_denied=SEND_MESSAGES | ATTACH_FILES)
        self.owner = self.add_user("owner", guild=guild)
        guild.owner_id = self.owner.id
        self.alice = self.add_user("alice", guild=guild, roles=[self.artist_role])
        self.bob = self.add_user("bob", guild=guild)
        self.moderator = self.add_user("mod", guild=guild, roles=[self.moderator_role])

    # -- permissions ------------------------------------------------------------------------
    def guild_permissions(self, user: User, guild: Guild) -> int:
        if user.id == guild.owner_id:
            return ALL_PERMISSIONS
        perms = guild.everyone.permissions
        for role_id in user.roles:
            if role_id in guild.roles:
                perms |= guild.roles[role_id].permissions
        return ALL_PERMISSIONS if perms & ADMINISTRATOR else perms

    def channel_permissions(self, user: User, channel: Channel) -> int:
        if channel.guild_id is None:
            return EVERYONE_DEFAULT
        guild = self.guilds[channel.guild_id]
        perms = self.guild_permissions(user, guild)
        if user.id == self.bot.id and not perms & ADMINISTRATOR:
            perms &= ~channel.bot_denied
        return perms

    # -- payloads ---------------------------------------------------------------------------
    def member_payload(self, user: User, guild: Guild, *, permissions: int | None = None,
                       with_user: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "roles": [str(r) for r in user.roles if r in guild.roles and r != guild.id],
            "joined_at": self.clock.iso(),
            "deaf": False,
            "mute": False,
            "nick": user.nick,
            "avatar": None,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }
        if with_user:
            out["user"] = user.payload()
        if permissions is not None:
            out["permissions"] = str(permissions)
        return out

    def guild_payload(self, guild: Guild) -> dict[str, Any]:
        """The GUILD_CREATE body: everything discord.py needs to consider the guild chunked."""
        members = [self.member_payload(self.users[uid], guild) for uid in guild.member_ids]
        return {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "owner_id": str(guild.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": [r.payload() for r in guild.roles.values()],
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "vanity_url_code": None,
            "description": None,
            "banner": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": guild.locale,
            "public_updates_channel_id": None,
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
            "large": False,
            "unavailable": False,
            "member_count": len(members),
            "joined_at": self.clock.iso(),
            "voice_states": [],
            "members": members,
            "channels": [c.payload() for c in guild.channels.values() if not c.deleted],
            "threads": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    def application_payload(self) -> dict[str, Any]:
        return {
            "id": str(self.application_id),
            "name": self.bot.name,
            "icon": None,
            "description": "imagine-bot under test",
            "rpc_origins": [],
            "bot_public": True,
            "bot_require_code_grant": False,
            "bot": self.bot.payload(),
            "owner": self.users[self._owner_id()].payload(),
            "summary": "",
            "verify_key": "0" * 64,
            "team": None,
            "flags": 0,
            "install_params": {"scopes": ["bot", "applications.commands"], "permissions": "0"},
            "tags": [],
            "approximate_guild_count": len(self.guilds),
        }

    def _owner_id(self) -> int:
        for guild in self.guilds.values():
            return guild.owner_id
        return self.bot.id
