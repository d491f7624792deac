"""The REST half: the routes discord.py calls for the bot, each recorded and rule-checked.

Every request is recorded (method, route, JSON, uploaded files with bytes, emulator time, the
answer) before waiters are woken, so tests assert on what the bot really sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .faults import Fault
from .rules import (
    ALREADY_ACKNOWLEDGED,
    INVALID_WEBHOOK_TOKEN,
    MISSING_PERMISSIONS,
    UNKNOWN_CHANNEL,
    UNKNOWN_INTERACTION,
    UNKNOWN_MESSAGE,
    UNKNOWN_WEBHOOK,
    ApiError,
    check_message,
    check_modal,
    unknown,
)
from .state import (
    ATTACH_FILES,
    EPHEMERAL,
    LOADING,
    MANAGE_MESSAGES,
    SEND_MESSAGES,
    VIEW_CHANNEL,
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
    from .server import Emulator

Handler = Callable[..., Awaitable[Any]]
API = "/api/v10"


def json_response(body: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    """discord.py parses JSON only when the content-type is exactly application/json."""
    if body is None:
        return web.Response(status=204, headers=headers)
    return web.Response(body=json.dumps(body).encode(), status=status, headers=headers,
                        content_type="application/json")


class Rest:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.world = emu.world
        self.routes: list[tuple[str, re.Pattern[str], str, Handler, bool]] = []
        r = self._route
        r("GET", "/users/@me", self.get_me)
        r("GET", "/users/{user_id}", self.get_user)
        r("POST", "/users/@me/channels", self.create_dm)
        r("GET", "/oauth2/applications/@me", self.get_application)
        r("GET", "/applications/@me", self.get_application)
        r("GET", "/gateway", self.get_gateway)
        r("GET", "/gateway/bot", self.get_gateway_bot)
        r("GET", "/applications/{app_id}/commands", self.get_commands)
        r("PUT", "/applications/{app_id}/commands", self.put_commands)
        r("POST", "/applications/{app_id}/commands", self.post_command)
        r("GET", "/applications/{app_id}/guilds/{guild_id}/commands", self.get_commands)
        r("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", self.put_commands)
        r("POST", "/applications/{app_id}/guilds/{guild_id}/commands", self.post_command)
        r("POST", "/interactions/{interaction_id}/{token}/callback", self.callback, auth=False)
        r("POST", "/webhooks/{app_id}/{token}", self.followup, auth=False)
        r("GET", "/webhooks/{app_id}/{token}/messages/{message_id}", self.get_webhook_message,
          auth=False)
        r("PATCH", "/webhooks/{app_id}/{token}/messages/{message_id}", self.edit_webhook_message,
          auth=False)
        r("DELETE", "/webhooks/{app_id}/{token}/messages/{message_id}",
          self.delete_webhook_message, auth=False)
        r("GET", "/channels/{channel_id}", self.get_channel)
        r("GET", "/channels/{channel_id}/messages", self.get_history)
        r("POST", "/channels/{channel_id}/messages", self.create_message)
        r("GET", "/channels/{channel_id}/messages/{message_id}", self.get_message)
        r("PATCH", "/channels/{channel_id}/messages/{message_id}", self.edit_message)
        r("DELETE", "/channels/{channel_id}/messages/{message_id}", self.delete_message)
        r("POST", "/channels/{channel_id}/typing", self.typing)
        r("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
          self.add_reaction)
        r("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/{user_id}",
          self.remove_reaction)
        r("GET", "/guilds/{guild_id}", self.get_guild)
        r("GET", "/guilds/{guild_id}/channels", self.get_guild_channels)
        r("GET", "/guilds/{guild_id}/roles", self.get_roles)
        r("GET", "/guilds/{guild_id}/members/{user_id}", self.get_member)

    def _route(self, method: str, template: str, handler: Handler, *, auth: bool = True) -> None:
        pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", re.escape(template).replace(r"\{", "{")
                         .replace(r"\}", "}"))
        self.routes.append((method, re.compile(f"^{pattern}$"), template, handler, auth))

    # -- dispatch ---------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path[len(API):] if request.path.startswith(API) else request.path
        payload, files = await _read_body(request)
        record = RecordedRequest(method=request.method, path=path, route="?",
                                 query=dict(request.query), json=payload, files=files,
                                 at=self.emu.clock.now())
        headers: dict[str, str] = {}
        try:
            for method, pattern, template, handler, auth in self.routes:
                match = pattern.match(path)
                if match and method == request.method:
                    record.route = template
                    if auth and request.headers.get("Authorization") != f"Bot {self.emu.token}":
                        raise ApiError(401, 0, "401: Unauthorized")
                    fault = next(
                        (f for f in self.emu.faults if f.take(method, template, record)), None
                    )
                    if fault is not None:
                        return await self._inject(request, record, fault)
                    headers = self.emu.rate_limits.check(method, template, match.groupdict())
                    body = await handler(record, **match.groupdict())
                    status = 204 if body is None else 200
                    break
            else:
                raise ApiError(404, 0, "404: Not Found (route not emulated)")
        except ApiError as err:
            body, status = err.body(), err.status
            headers = headers or err.headers
            self.emu._violate(f"http-{err.status}-{err.code}",
                              f"{request.method} {path}: {err.message} {err.errors or ''}",
                              record.interaction_id)
        record.status, record.response = status, body
        self.emu.requests.append(record)
        if self.emu.on_request is not None:
            self.emu.on_request(record)
        await self.emu._notify()
        return json_response(body, status, headers)

    async def _inject(self, request: web.Request, record: RecordedRequest,
                      fault: Fault) -> web.StreamResponse:
        """A failure the test asked for (see faults.py): not a violation by the bot."""
        record.injected = True
        record.status = 0 if fault.disconnect else fault.status
        self.emu.requests.append(record)
        await self.emu._notify()
        if fault.disconnect:
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)  # never reaches the client
        body = {"message": f"{fault.status}: injected by the test", "code": 0}
        return json_response(body, fault.status)

    # -- helpers ----------------------------------------------------------------------------
    def _channel(self, channel_id: str) -> Channel:
        channel = self.world.channels.get(int(channel_id))
        if channel is None or channel.deleted:
            raise unknown("Channel", UNKNOWN_CHANNEL)
        return channel

    def _message(self, message_id: str, channel_id: int | None = None) -> Message:
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

    def _require(self, channel: Channel, perms: int) -> None:
        have = self.world.channel_permissions(self.world.bot, channel)
        if have & perms != perms:
            raise ApiError(403, MISSING_PERMISSIONS, "Missing Permissions")

    def _interaction_by_token(self, app_id: str, token: str, record: RecordedRequest) -> Interaction:
        inter = self.emu.tokens.get(token)
        if inter is None or app_id != str(self.world.application_id):
            raise unknown("Webhook", UNKNOWN_WEBHOOK)
        record.interaction_id = inter.id
        if self.emu.clock.now() - inter.created_at > self.emu.token_lifetime:
            raise ApiError(401, INVALID_WEBHOOK_TOKEN, "Invalid Webhook Token")
        if not inter.acknowledged:
            raise unknown("Webhook", UNKNOWN_WEBHOOK)
        return inter

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

    async def _create(self, channel_id: int, guild_id: int | None, payload: dict[str, Any],
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

    async def _edit(self, msg: Message, payload: dict[str, Any], files: list[RecordedFile]) -> Message:
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

    # -- application commands ---------------------------------------------------------------
    def _command_list(self, app_id: str, guild_id: str | None) -> list[dict[str, Any]]:
        if app_id != str(self.world.application_id):
            raise ApiError(403, 50001, "Missing Access")
        if guild_id is None:
            return self.emu.global_commands
        if int(guild_id) not in self.world.guilds:
            raise ApiError(403, 50001, "Missing Access")
        return self.emu.guild_commands.setdefault(int(guild_id), [])

    def _stored_command(self, data: dict[str, Any], guild_id: str | None,
                        previous: list[dict[str, Any]]) -> dict[str, Any]:
        same = next((c for c in previous if c["name"] == data["name"]
                     and c.get("type", 1) == data.get("type", 1)), None)
        cmd = dict(data)
        cmd.setdefault("type", 1)
        cmd.setdefault("description", "")
        cmd.setdefault("options", [])
        cmd["id"] = same["id"] if same else str(self.emu.ids.next())
        cmd["application_id"] = str(self.world.application_id)
        cmd["version"] = str(self.emu.ids.next())
        if guild_id is not None:
            cmd["guild_id"] = guild_id
        return cmd

    async def get_commands(self, record: RecordedRequest, app_id: str,
                           guild_id: str | None = None) -> Any:
        return self._command_list(app_id, guild_id)

    async def put_commands(self, record: RecordedRequest, app_id: str,
                           guild_id: str | None = None) -> Any:
        previous = list(self._command_list(app_id, guild_id))
        body = record.json or []
        names = [(c.get("name"), c.get("type", 1)) for c in body]
        if len(names) != len(set(names)):
            raise ApiError(400, 50035, "Invalid Form Body",
                           {"_errors": [{"code": "APPLICATION_COMMANDS_DUPLICATE_NAME",
                                         "message": "Application command names must be unique"}]})
        stored = [self._stored_command(c, guild_id, previous) for c in body]
        target = self._command_list(app_id, guild_id)
        target[:] = stored
        return stored

    async def post_command(self, record: RecordedRequest, app_id: str,
                           guild_id: str | None = None) -> Any:
        target = self._command_list(app_id, guild_id)
        cmd = self._stored_command(record.json or {}, guild_id, target)
        target[:] = [c for c in target if c["id"] != cmd["id"]] + [cmd]
        return cmd

    # -- interactions -----------------------------------------------------------------------
    async def callback(self, record: RecordedRequest, interaction_id: str, token: str) -> Any:
        inter = self.emu.interactions.get(int(interaction_id)) if interaction_id.isdigit() else None
        if inter is None or inter.token != token:
            raise ApiError(404, UNKNOWN_INTERACTION, "Unknown interaction")
        record.interaction_id = inter.id
        if inter.acknowledged:
            raise ApiError(400, ALREADY_ACKNOWLEDGED, "Interaction has already been acknowledged.")
        age = self.emu.clock.now() - inter.created_at
        if age > self.emu.response_deadline:
            self.emu._violate("late-callback", f"first response after {age:.2f} s", inter.id)
            raise ApiError(404, UNKNOWN_INTERACTION, "Unknown interaction")

        payload = record.json or {}
        kind = int(payload.get("type", 0))
        data = payload.get("data") or {}
        msg: Message | None = None
        if kind == 4:
            msg = await self._create(inter.channel_id, inter.guild_id, data, record.files,
                                     interaction=inter)
            inter.original_message_id = msg.id
        elif kind == 5:
            msg = await self._create(inter.channel_id, inter.guild_id,
                                     {"flags": data.get("flags", 0)}, [], interaction=inter,
                                     extra_flags=LOADING)
            inter.original_message_id = msg.id
        elif kind in (6, 7):
            if inter.message_id is None:
                raise ApiError(400, 40043, "Interaction type does not support this response type")
            msg = self.emu.store[inter.message_id]
            if kind == 7:
                await self._edit(msg, data, record.files)
            inter.original_message_id = msg.id
        elif kind == 9:
            if inter.type == 5:
                raise ApiError(400, 40043, "Interaction type does not support this response type")
            check_modal(data)
            inter.modal = data
        elif kind not in (1, 8, 10, 12):
            raise ApiError(400, 50035, "Invalid Form Body",
                           {"type": {"_errors": [{"code": "BASE_TYPE_CHOICES",
                                                  "message": f"Value must be one of (1, 4, 5, 6, 7, 8, 9, 10, 12). Got {kind}"}]}})
        inter.initial_response = kind
        inter.responded_at = self.emu.clock.now()
        if record.query.get("with_response") not in ("1", "true", "True"):
            return None
        resource: dict[str, Any] = {"type": kind}
        if msg is not None and kind in (4, 5, 7):
            resource["message"] = msg.payload(self.emu.clock)
        return {
            "interaction": {
                "id": str(inter.id),
                "type": inter.type,
                "response_message_id": str(msg.id) if msg else None,
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool(msg and msg.ephemeral),
            },
            "resource": resource,
        }

    async def followup(self, record: RecordedRequest, app_id: str, token: str) -> Any:
        inter = self._interaction_by_token(app_id, token, record)
        self._channel(str(inter.channel_id))  # a deleted channel takes its messages with it
        payload = record.json or {}
        original = self.emu.store.get(inter.original_message_id or 0)
        if (inter.initial_response == 5 and original is not None and original.loading
                and not original.deleted):
            # Discord fills the "thinking..." message with the first follow-up after a defer.
            msg = await self._edit(original, payload, record.files)
        else:
            msg = await self._create(inter.channel_id, inter.guild_id, payload, record.files,
                                     interaction=inter)
        inter.followup_ids.append(msg.id)
        wait = record.query.get("wait", "false").lower() in ("1", "true")
        return msg.payload(self.emu.clock) if wait else None

    def _webhook_message(self, inter: Interaction, message_id: str) -> Message:
        if message_id == "@original":
            if inter.original_message_id is None:
                raise unknown("Message", UNKNOWN_MESSAGE)
            return self._message(str(inter.original_message_id))
        msg = self._message(message_id)
        if msg.interaction_id != inter.id and msg.id != inter.original_message_id:
            raise unknown("Message", UNKNOWN_MESSAGE)
        return msg

    async def get_webhook_message(self, record: RecordedRequest, app_id: str, token: str,
                                  message_id: str) -> Any:
        inter = self._interaction_by_token(app_id, token, record)
        return self._webhook_message(inter, message_id).payload(self.emu.clock)

    async def edit_webhook_message(self, record: RecordedRequest, app_id: str, token: str,
                                   message_id: str) -> Any:
        inter = self._interaction_by_token(app_id, token, record)
        msg = self._webhook_message(inter, message_id)
        await self._edit(msg, record.json or {}, record.files)
        return msg.payload(self.emu.clock)

    async def delete_webhook_message(self, record: RecordedRequest, app_id: str, token: str,
                                     message_id: str) -> Any:
        inter = self._interaction_by_token(app_id, token, record)
        await self.emu._delete_message(self._webhook_message(inter, message_id))
        return None

    # -- channels & messages ----------------------------------------------------------------
    async def get_channel(self, record: RecordedRequest, channel_id: str) -> Any:
        return self._channel(channel_id).payload()

    async def get_history(self, record: RecordedRequest, channel_id: str) -> Any:
        channel = self._channel(channel_id)
        limit = int(record.query.get("limit", 50))
        msgs = [m for m in self.emu.messages_in(channel.id, include_ephemeral=False)]
        return [m.payload(self.emu.clock) for m in reversed(msgs)][:limit]

    async def create_message(self, record: RecordedRequest, channel_id: str) -> Any:
        channel = self._channel(channel_id)
        if channel.recipient is not None and channel.recipient.dms_closed:
            raise ApiError(403, 50007, "Cannot send messages to this user")
        self._require(channel, VIEW_CHANNEL | SEND_MESSAGES | (ATTACH_FILES if record.files else 0))
        payload = dict(record.json or {})
        payload["flags"] = int(payload.get("flags") or 0) & ~EPHEMERAL  # only interactions may
        msg = await self._create(channel.id, channel.guild_id, payload, record.files)
        return msg.payload(self.emu.clock)

    async def get_message(self, record: RecordedRequest, channel_id: str, message_id: str) -> Any:
        channel = self._channel(channel_id)
        return self._message(message_id, channel.id).payload(self.emu.clock)

    async def edit_message(self, record: RecordedRequest, channel_id: str, message_id: str) -> Any:
        channel = self._channel(channel_id)
        msg = self._message(message_id, channel.id)
        if msg.author.id != self.world.bot.id:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        await self._edit(msg, record.json or {}, record.files)
        return msg.payload(self.emu.clock)

    async def delete_message(self, record: RecordedRequest, channel_id: str,
                             message_id: str) -> Any:
        channel = self._channel(channel_id)
        msg = self._message(message_id, channel.id)
        if msg.author.id != self.world.bot.id:
            self._require(channel, MANAGE_MESSAGES)
        await self.emu._delete_message(msg)
        return None

    async def typing(self, record: RecordedRequest, channel_id: str) -> Any:
        self._channel(channel_id)
        return None

    async def add_reaction(self, record: RecordedRequest, channel_id: str, message_id: str,
                           emoji: str) -> Any:
        channel = self._channel(channel_id)
        msg = self._message(message_id, channel.id)
        msg.reactions.setdefault(emoji, set()).add(self.world.bot.id)
        return None

    async def remove_reaction(self, record: RecordedRequest, channel_id: str, message_id: str,
                              emoji: str, user_id: str) -> Any:
        channel = self._channel(channel_id)
        msg = self._message(message_id, channel.id)
        uid = self.world.bot.id if user_id == "@me" else int(user_id)
        if uid != self.world.bot.id:
            self._require(channel, MANAGE_MESSAGES)
        msg.reactions.get(emoji, set()).discard(uid)
        return None

    # -- guilds -----------------------------------------------------------------------------
    def _guild(self, guild_id: str):
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


async def _read_body(request: web.Request) -> tuple[Any, list[RecordedFile]]:
    """JSON bodies, or multipart with `payload_json` and `files[n]` parts (bytes kept)."""
    files: list[RecordedFile] = []
    if request.content_type.startswith("multipart/"):
        payload: Any = None
        reader = await request.multipart()
        async for part in reader:
            if part.name == "payload_json":
                payload = json.loads(await part.text())
            elif part.filename is not None:
                data = bytes(await part.read(decode=False))
                files.append(RecordedFile(field=part.name or "", filename=part.filename,
                                          content_type=part.headers.get("Content-Type", ""),
                                          data=data))
        return payload, files
    if request.can_read_body:
        raw = await request.read()
        if raw:
            return json.loads(raw), files
    return None, files
