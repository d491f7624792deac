"""`Emulator`: a loopback Discord (gateway + REST) that the real discord.py client talks to.

Tests drive it like Discord's users would (`send_slash`, `click`, `submit_modal`,
`add_reaction`) and assert on what the bot sent (`messages_in`, `interaction_responses`,
`requests`, `violations`), waiting with `wait_for` instead of sleeping.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from .commands import EmulatorUsageError, build_command_data
from .faults import Fault
from .gateway import GUILD_MESSAGE_REACTIONS, GUILD_MESSAGES, GUILDS, Gateway
from .ratelimits import RateLimiter
from .rest import API, Rest
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
    new_token,
)
from .world import World

T = TypeVar("T")

COMMAND, COMPONENT, MODAL_SUBMIT = 2, 3, 5


class Emulator:
    """One emulated Discord: a default world (see `World.build_default`) unless told otherwise."""

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
        self.rest = Rest(self)
        self._changed: asyncio.Condition | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.poll_s = 0.05

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> Emulator:
        self._changed = asyncio.Condition()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self.gateway.handle)
        app.router.add_get("/attachments/{attachment_id}/{filename}", self._serve_attachment)
        app.router.add_route("*", API + "/{tail:.*}", self.rest.handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        site = web.SockSite(self._runner, sock, shutdown_timeout=1.0)
        await site.start()
        return self

    async def stop(self) -> None:
        await self.gateway.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Emulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

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

    async def delete_channel(self, channel: Channel | int) -> None:
        """A moderator deletes the channel: the bot hears CHANNEL_DELETE (guilds intent);
        posting, following up or any channel route there answers 404 Unknown Channel (10003),
        and editing, fetching or deleting its messages through an interaction token answers
        404 Unknown Message (10008). Nobody can use a command or a button there any more."""
        channel = self._channel(channel)
        if channel.deleted:
            raise EmulatorUsageError(f"channel {channel.name!r} was already deleted")
        channel.deleted = True
        await self.gateway.dispatch("CHANNEL_DELETE", channel.payload(), intent=GUILDS)

    async def delete_message(self, message: Message | int) -> None:
        """A moderator deletes a message (the bot's reply, say): the bot hears MESSAGE_DELETE and
        editing it, through its channel or the interaction token, answers 404 10008."""
        msg = self.store[message if isinstance(message, int) else message.id]
        if msg.deleted:
            raise EmulatorUsageError(f"message {msg.id} was already deleted")
        await self._delete_message(msg)

    def dm_channel(self, user: User) -> Channel:
        """The bot's DM channel with `user` (messages_in(emu.dm_channel(u)) reads the DMs)."""
        return self.world.dm_channel(user)

    def set_rate_limit(self, method: str, route: str, limit: int, per_seconds: float) -> None:
        """Limit a route template (e.g. "PATCH", "/channels/{channel_id}/messages/{message_id}")
        per channel/guild/token, answering with X-RateLimit-* headers and 429s like Discord."""
        self.rate_limits.set(method, route, limit, per_seconds)

    def fail_next(self, method: str, route: str, *, times: int = 1, status: int = 503,
                  disconnect: bool = False,
                  when: Callable[[RecordedRequest], bool] | None = None) -> Fault:
        """The next ``times`` matching requests get ``status`` (or a dropped connection)."""
        fault = Fault(method, route, times, status, disconnect, when)
        self.faults.append(fault)
        return fault

    def find_command(self, name: str, guild_id: int | None = None) -> dict[str, Any] | None:
        """A synced command by name: guild commands first, then global ones."""
        for cmd in self.guild_commands.get(guild_id, []) if guild_id else []:
            if cmd["name"] == name and cmd.get("type", 1) == 1:
                return cmd
        return next((c for c in self.global_commands
                     if c["name"] == name and c.get("type", 1) == 1), None)

    # -- waiting ----------------------------------------------------------------------------
    async def _notify(self) -> None:
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], T], timeout: float = 30.0,
                       what: str | None = None) -> T:
        """Wait until predicate() is truthy (re-checked on every request/event); return it.

        Raises TimeoutError naming `what` and the last requests, so a failing test says why.
        """
        assert self._changed is not None, "start() the emulator first"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self._changed:
            while True:
                result = predicate()
                if result:
                    return result
                remaining = deadline - loop.time()
                if remaining <= 0:
                    recent = "\n".join(f"  {r.method} {r.path} -> {r.status}"
                                       for r in self.requests[-10:])
                    raise TimeoutError(f"emulator: {what or 'condition'} not met within "
                                       f"{timeout} s; last requests:\n{recent}")
                try:
                    # woken by every request/event; the short cap also catches conditions on
                    # the bot's own state, which changes without telling the emulator
                    await asyncio.wait_for(self._changed.wait(), min(remaining, self.poll_s))
                except TimeoutError:
                    pass

    async def wait_until_connected(self, timeout: float = 30.0, *, identifies: int = 1) -> None:
        """Until a bot session is live and `identifies` IDENTIFYs happened in all (pass 2 to
        wait for a restarted bot); READY and GUILD_CREATE are sent before this returns."""
        await self.wait_for(
            lambda: self.gateway.live_sessions and self.gateway.identify_count >= identifies,
            timeout, f"{identifies} gateway IDENTIFY(s) and a live session")

    async def wait_for_response(self, interaction_id: int, timeout: float = 30.0) -> Interaction:
        """Until the interaction got its initial callback (defer, message, modal...)."""
        inter = self.interactions[interaction_id]
        return await self.wait_for(lambda: inter if inter.acknowledged else None, timeout,
                                   f"initial response to interaction {interaction_id}")

    async def wait_for_message(self, predicate: Callable[[Message], bool],
                               timeout: float = 30.0) -> Message:
        """Until some live message (created or edited) satisfies predicate; the newest wins."""
        def find() -> Message | None:
            for msg in sorted(self.store.values(), key=lambda m: -m.id):
                if not msg.deleted and predicate(msg):
                    return msg
            return None
        return await self.wait_for(find, timeout, "a matching message")

    # -- queries ----------------------------------------------------------------------------
    def messages_in(self, channel: Channel | int, *, include_ephemeral: bool = True,
                    include_deleted: bool = False) -> list[Message]:
        cid = channel.id if isinstance(channel, Channel) else channel
        return sorted((m for m in self.store.values() if m.channel_id == cid
                       and (include_ephemeral or not m.ephemeral)
                       and (include_deleted or not m.deleted)), key=lambda m: m.id)

    def interaction(self, interaction_id: int) -> Interaction:
        return self.interactions[interaction_id]

    def interaction_responses(self, interaction_id: int) -> list[RecordedRequest]:
        """Every request the bot made for this interaction (callback, follow-ups, edits)."""
        return [r for r in self.requests if r.interaction_id == interaction_id]

    def original_message(self, interaction_id: int) -> Message | None:
        mid = self.interactions[interaction_id].original_message_id
        return self.store.get(mid) if mid is not None else None

    def followups(self, interaction_id: int) -> list[Message]:
        inter = self.interactions[interaction_id]
        return [self.store[m] for m in inter.followup_ids
                if m != inter.original_message_id and not self.store[m].deleted]

    def requests_to(self, method: str, route: str) -> list[RecordedRequest]:
        """Requests by route template, e.g. requests_to("POST", "/channels/{channel_id}/messages")."""
        return [r for r in self.requests if r.method == method and r.route == route]

    def transcript(self, last: int = 50) -> str:
        """The last requests and their answers, one a line: paste it into a failing assert."""
        lines = []
        for r in self.requests[-last:]:
            body = r.json if r.json is not None else ""
            files = f" files={[f'{f.filename}:{len(f.data)}B' for f in r.files]}" if r.files else ""
            lines.append(f"{r.at - self.clock._wall_start:8.3f}s {r.method} {r.route} "
                         f"-> {r.status} {str(body)[:160]}{files}")
        return "\n".join(lines)

    @property
    def violations(self) -> list[Violation]:
        """Rules broken so far, including interactions still unanswered past the deadline."""
        now = self.clock.now()
        reported = {v.interaction_id for v in self._violations if v.rule == "late-callback"}
        late = [Violation("no-response", f"unanswered after {now - i.created_at:.1f} s",
                          i.created_at + self.response_deadline, i.id)
                for i in self.interactions.values()
                if not i.acknowledged and i.id not in reported
                and now - i.created_at > self.response_deadline]
        return self._violations + late

    def _violate(self, rule: str, detail: str, interaction_id: int | None = None) -> None:
        self._violations.append(Violation(rule, detail, self.clock.now(), interaction_id))

    # -- acting as users --------------------------------------------------------------------
    async def send_slash(self, name: str, options: dict[str, Any] | None = None, *,
                         user: User | None = None, channel: Channel | int | None = None,
                         locale: str = "en-US") -> int:
        """A user runs /name (use "group sub" for subcommands); returns the interaction id."""
        channel = self._channel(channel or self.world.general)
        resolved: dict[str, dict[str, Any]] = {}
        data = build_command_data(self, name, options or {}, channel.guild_id, resolved)
        if resolved:
            data["resolved"] = resolved
        return await self._interact(COMMAND, data, user, channel, locale=locale)

    async def click(self, message: Message | int, custom_id: str, *, user: User | None = None,
                    values: list[str] | None = None) -> int:
        """A user presses a button (or picks `values` in a select) on a message."""
        msg = self.store[message if isinstance(message, int) else message.id]
        if msg.deleted:
            raise EmulatorUsageError(f"message {msg.id} was deleted; nobody can click on it")
        comp = next((c for c in _leaves(msg.components) if c.get("custom_id") == custom_id), None)
        if comp is None:
            raise EmulatorUsageError(
                f"message {msg.id} has no component {custom_id!r}; it has {msg.custom_ids()}")
        if comp.get("disabled"):
            raise EmulatorUsageError(f"component {custom_id!r} is disabled")
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": comp.get("type", 2)}
        if values is not None:
            data["values"] = values
        return await self._interact(COMPONENT, data, user, self._channel(msg.channel_id),
                                    message=msg)

    async def submit_modal(self, opened_by: int, values: dict[str, str], *,
                           user: User | None = None) -> int:
        """A user fills in the modal the bot opened in answer to interaction `opened_by`."""
        opener = self.interactions[opened_by]
        if opener.modal is None:
            raise EmulatorUsageError(f"interaction {opened_by} did not open a modal")
        modal = opener.modal
        known = {c["custom_id"] for c in _leaves(modal.get("components", [])) if "custom_id" in c}
        unknown_ids = set(values) - known
        if unknown_ids:
            raise EmulatorUsageError(f"modal has no inputs {sorted(unknown_ids)}; it has {sorted(known)}")

        def answer(comp: dict[str, Any]) -> dict[str, Any]:
            if comp.get("type") == 1:
                return {"type": 1, "components": [answer(c) for c in comp.get("components", [])]}
            if comp.get("type") == 18:
                return {"type": 18, "component": answer(comp["component"])}
            out = {"type": comp.get("type", 4), "custom_id": comp.get("custom_id")}
            out["value"] = values.get(comp.get("custom_id"), comp.get("value") or "")
            return out

        data = {"custom_id": modal["custom_id"],
                "components": [answer(c) for c in modal.get("components", [])]}
        message = self.store.get(opener.message_id) if opener.message_id else None
        return await self._interact(MODAL_SUBMIT, data, user or opener.user,
                                    self._channel(opener.channel_id), message=message)

    async def add_reaction(self, message: Message | int, emoji: str, user: User) -> None:
        """A user reacts; the bot hears MESSAGE_REACTION_ADD (if it asked for the intent)."""
        msg = self.store[message if isinstance(message, int) else message.id]
        self._require_live_channel(self._channel(msg.channel_id))
        msg.reactions.setdefault(emoji, set()).add(user.id)
        data: dict[str, Any] = {
            "user_id": str(user.id), "channel_id": str(msg.channel_id),
            "message_id": str(msg.id), "emoji": {"id": None, "name": emoji},
            "message_author_id": str(msg.author.id), "burst": False, "type": 0,
        }
        if msg.guild_id is not None:
            guild = self.world.guilds[msg.guild_id]
            data["guild_id"] = str(guild.id)
            data["member"] = self.world.member_payload(user, guild)
        self._require_bot()
        await self.gateway.dispatch("MESSAGE_REACTION_ADD", data, intent=GUILD_MESSAGE_REACTIONS)

    async def reconnect_gateway(self) -> None:
        """Discord's op 7: the client reconnects and RESUMEs."""
        await self.gateway.reconnect_all()

    async def invalidate_sessions(self) -> None:
        """Discord's op 9 (d=false): the client must IDENTIFY afresh (a new READY)."""
        await self.gateway.invalidate_all()

    async def drop_gateway(self) -> None:
        """Cut the socket like a network blip; the client reconnects and RESUMEs."""
        await self.gateway.drop_all()

    # -- internals --------------------------------------------------------------------------
    def _channel(self, channel: Channel | int) -> Channel:
        return self.world.channels[channel if isinstance(channel, int) else channel.id]

    def _require_live_channel(self, channel: Channel) -> None:
        if channel.deleted:
            raise EmulatorUsageError(
                f"channel {channel.name!r} was deleted; nobody can act in it any more")

    def _require_bot(self) -> None:
        if not self.gateway.live_sessions:
            raise EmulatorUsageError("no bot is connected to the emulator's gateway")

    async def _interact(self, kind: int, data: dict[str, Any], user: User | None,
                        channel: Channel, *, message: Message | None = None,
                        locale: str = "en-US") -> int:
        self._require_bot()
        world = self.world
        self._require_live_channel(channel)
        if channel.guild_id is None:
            user = user or channel.recipient
            if user is not channel.recipient:
                raise EmulatorUsageError("only the DM's recipient can use the bot's DM with them")
        user = user or world.alice
        iid = self.ids.next()
        inter = Interaction(id=iid, token=new_token(iid), type=kind,
                            created_at=self.clock.now(), user=user, guild_id=channel.guild_id,
                            channel_id=channel.id, data=data,
                            message_id=message.id if message else None)
        payload: dict[str, Any] = {
            "id": str(iid),
            "application_id": str(world.application_id),
            "type": kind,
            "data": data,
            "channel_id": str(channel.id),
            "channel": channel.payload(),
            "token": inter.token,
            "version": 1,
            "app_permissions": str(world.channel_permissions(world.bot, channel)),
            "locale": locale,
            "entitlements": [],
        }
        if channel.guild_id is None:  # a button in the bot's DM: a user, no member or guild
            payload |= {"user": user.payload(), "context": 1,
                        "authorizing_integration_owners": {"0": "0"},
                        "attachment_size_limit": self.default_upload_limit}
        else:
            guild = world.guilds[channel.guild_id]
            payload |= {
                "guild_id": str(guild.id),
                "guild": {"id": str(guild.id), "locale": guild.locale, "features": []},
                "member": world.member_payload(
                    user, guild, permissions=world.channel_permissions(user, channel)),
                "guild_locale": guild.locale,
                "authorizing_integration_owners": {"0": str(guild.id)},
                "context": 0,
                "attachment_size_limit": guild.attachment_size_limit,
            }
        if message is not None:
            payload["message"] = message.payload(self.clock)
        inter.payload = payload
        self.interactions[iid] = inter
        self.tokens[inter.token] = inter
        await self.gateway.dispatch("INTERACTION_CREATE", payload)
        return iid

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

    async def _serve_attachment(self, request: web.Request) -> web.StreamResponse:
        att = self.attachments.get(int(request.match_info["attachment_id"]))
        if att is None:
            return web.Response(status=404)
        return web.Response(body=att.data, content_type=att.content_type)

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


def _leaves(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from .state import iter_components

    return [c for c in iter_components(components) if c.get("type") not in (1, 18)]
