"""`EmulatorCore`: the state the REST routes, the gateway and the user-side helpers all share.

It is split from `Emulator` so the route modules and `commands.py` can type against the shared
state without importing the class that assembles them (no import circle), and so each half of the
public API (acting as users, asserting) lives with the state it touches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .faults import Fault
from .gateway import GUILD_MESSAGES, Gateway
from .ratelimits import RateLimiter
from .state import (
    DEFAULT_UPLOAD_LIMIT,
    Attachment,
    Channel,
    Clock,
    Interaction,
    Message,
    RecordedRequest,
    Snowflakes,
    User,
    Violation,
    guess_content_type,
    image_size,
)
from .world import World

API = "/api/v10"


class EmulatorCore:
    """One emulated Discord's state: a default world (see `World.build_default`) unless told
    otherwise."""

    def __init__(self, *, token: str = "emulator.bot.token", bot_name: str = "imagine-bot",
                 default_world: bool = True, response_deadline: float = 3.0,
                 token_lifetime: float = 15 * 60, heartbeat_interval_ms: int = 41250,
                 default_upload_limit: int = DEFAULT_UPLOAD_LIMIT) -> None:
        self.clock = Clock()
        self.ids = Snowflakes(self.clock)
        self.token = token
        self.response_deadline = response_deadline
        self.token_lifetime = token_lifetime
        self.default_upload_limit = default_upload_limit
        self.world = World(self.clock, self.ids, bot_name=bot_name)
        if default_world:
            self.world.build_default()
        self.store: dict[int, Message] = {}
        self.attachments: dict[int, Attachment] = {}
        self.interactions: dict[int, Interaction] = {}
        self.tokens: dict[str, Interaction] = {}
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        # Called with every request after it was handled, before the answer is sent (e.g. a
        # test kills the bot process right after Discord received its ack).
        self.on_request: Callable[[RecordedRequest], None] | None = None
        self._violations: list[Violation] = []
        self.global_commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self.rate_limits = RateLimiter(self.clock)
        self.gateway = Gateway(self, heartbeat_interval_ms=heartbeat_interval_ms)
        self._changed: asyncio.Condition | None = None
        self.port = 0
        self.poll_s = 0.05

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        """What `discord.http.Route.BASE` must be set to."""
        return self.base_url + API

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    # -- the world, for tests ---------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        # emu.alice, emu.general, emu.guild ... come from the default world
        world = self.__dict__.get("world")
        if world is not None and name in world.__dict__:
            return world.__dict__[name]
        raise AttributeError(name)

    @property
    def bot(self) -> User:
        return self.world.bot

    @property
    def application_id(self) -> int:
        return self.world.application_id

    def upload(self, filename: str, data: bytes, *, content_type: str | None = None) -> Attachment:
        """A file a user attaches to a slash command (pass it as an option value)."""
        return self._new_attachment(filename, data, content_type=content_type)

    def find_command(self, name: str, guild_id: int | None = None) -> dict[str, Any] | None:
        """A synced command by name: guild commands first, then global ones, as Discord's
        client shows them."""
        for cmd in self.guild_commands.get(guild_id, []) if guild_id else []:
            if cmd["name"] == name and cmd.get("type", 1) == 1:
                return cmd
        return next((c for c in self.global_commands
                     if c["name"] == name and c.get("type", 1) == 1), None)

    def messages_in(self, channel: Channel | int, *, include_ephemeral: bool = True,
                    include_deleted: bool = False) -> list[Message]:
        cid = channel.id if isinstance(channel, Channel) else channel
        return sorted((m for m in self.store.values() if m.channel_id == cid
                       and (include_ephemeral or not m.ephemeral)
                       and (include_deleted or not m.deleted)), key=lambda m: m.id)

    # -- shared by the routes, the gateway and the helpers ------------------------------------
    async def _notify(self) -> None:
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    def _violate(self, rule: str, detail: str, interaction_id: int | None = None) -> None:
        self._violations.append(Violation(rule, detail, self.clock.now(), interaction_id))

    def _channel(self, channel: Channel | int) -> Channel:
        return self.world.channels[channel if isinstance(channel, int) else channel.id]

    def _new_attachment(self, filename: str, data: bytes, *, content_type: str | None = None,
                        description: str | None = None, channel_id: int | None = None) -> Attachment:
        aid = self.ids.next()
        content_type = content_type or guess_content_type(filename)
        width, height = image_size(data) if content_type.startswith("image/") else (None, None)
        att = Attachment(id=aid, filename=filename, data=data, content_type=content_type,
                         url=f"{self.base_url}/attachments/{aid}/{filename}",
                         description=description, width=width, height=height)
        self.attachments[aid] = att
        return att

    async def _add_message(self, msg: Message) -> None:
        self.store[msg.id] = msg
        if not msg.ephemeral:
            await self.gateway.dispatch("MESSAGE_CREATE", msg.payload(self.clock),
                                        intent=GUILD_MESSAGES)

    async def _message_changed(self, msg: Message) -> None:
        if not msg.ephemeral:
            await self.gateway.dispatch("MESSAGE_UPDATE", msg.payload(self.clock),
                                        intent=GUILD_MESSAGES)

    async def _delete_message(self, msg: Message) -> None:
        msg.deleted = True
        if not msg.ephemeral:
            data = {"id": str(msg.id), "channel_id": str(msg.channel_id)}
            if msg.guild_id is not None:
                data["guild_id"] = str(msg.guild_id)
            await self.gateway.dispatch("MESSAGE_DELETE", data, intent=GUILD_MESSAGES)
