"""The playground's web page and the JSON API behind it, on top of one running ``Emulator``.

The page acts as whichever member the visitor picks: everything it does goes through the same
emulator calls the end-to-end tests use (``send_slash``, ``click``, ``submit_modal``,
``add_reaction``), so the bot sees exactly what Discord's client would send. Ephemeral replies
are shown only to the member they were meant for; Discord rules the bot broke are listed.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from playground.emulator import Emulator, EmulatorUsageError
from playground.emulator.commands import ATTACHMENT, CHANNEL, ROLE, SUB_COMMAND, USER
from playground.emulator.state import MANAGE_GUILD, Channel, Message, User

STATIC = Path(__file__).parent / "static"
MAX_MESSAGES = 60  # per channel on the page; older ones scroll out of the playground
MAX_UPLOAD = 25 * 1024 * 1024  # Discord's own default attachment limit


class BadRequest(web.HTTPBadRequest):
    """A request the page should not have made: answered as JSON the page shows as is."""

    def __init__(self, message: str) -> None:
        super().__init__(text=json.dumps({"error": message}), content_type="application/json")


class PlaygroundApi:
    """Reads the emulator's state for one member's view and acts as that member."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.closed_modals: set[int] = set()  # submitted or dismissed on the page

    # -- who and where ------------------------------------------------------------------------
    def members(self) -> list[User]:
        guild = self.emu.guild
        return [
            self.emu.world.users[uid]
            for uid in guild.member_ids
            if not self.emu.world.users[uid].bot and uid != guild.owner_id
        ]

    def user(self, raw: object) -> User:
        try:
            user = self.emu.world.users[int(raw)]  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError):
            raise BadRequest(f"no member with id {raw!r}") from None
        if user.bot:
            raise BadRequest("the page cannot act as the bot")
        return user

    def channel(self, raw: object, user: User) -> Channel:
        if raw == "dm":
            return self.emu.dm_channel(user)
        try:
            channel = self.emu.world.channels[int(raw)]  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError):
            raise BadRequest(f"no channel with id {raw!r}") from None
        if channel.guild_id is None and channel.recipient is not user:
            raise BadRequest("that is someone else's DM")
        return channel

    def is_moderator(self, user: User) -> bool:
        return bool(self.emu.world.guild_permissions(user, self.emu.guild) & MANAGE_GUILD)

    def world(self) -> dict[str, Any]:
        guild = self.emu.guild
        channels = [
            {"id": str(c.id), "name": c.name, "nsfw": c.nsfw}
            for c in sorted(guild.channels.values(), key=lambda c: c.position)
            if not c.deleted and c.type == 0 and not c.bot_denied
        ]
        members = [
            {"id": str(u.id), "name": u.name, "moderator": self.is_moderator(u)}
            for u in self.members()
        ]
        roles = [
            {"id": str(r.id), "name": r.name} for r in guild.roles.values() if r.name != "@everyone"
        ]
        return {
            "guild": guild.name,
            "bot": self.emu.bot.name,
            "channels": channels,
            "members": members,
            "roles": roles,
        }

    # -- what a member sees ---------------------------------------------------------------------
    def visible(self, msg: Message, user: User) -> bool:
        if msg.deleted:
            return False
        if not msg.ephemeral:
            return True
        inter = self.emu.interactions.get(msg.interaction_id or 0)
        return inter is not None and inter.user is user

    def message_view(self, msg: Message) -> dict[str, Any]:
        out = msg.payload(self.emu.clock)
        for att in out["attachments"]:  # served by this page, so a drop on /provenance works
            att["url"] = att["proxy_url"] = f"/attachments/{att['id']}/{att['filename']}"
        out["ephemeral"] = msg.ephemeral
        out["loading"] = msg.loading
        inter = self.emu.interactions.get(msg.interaction_id or 0)
        if inter is not None and inter.type == 2:
            out["command"] = {"name": _command_name(inter.data), "user": inter.user.name}
        return out

    def messages(self, channel: Channel, user: User) -> list[dict[str, Any]]:
        shown = [
            m
            for m in self.emu.store.values()
            if m.channel_id == channel.id and self.visible(m, user)
        ]
        shown.sort(key=lambda m: m.id)
        return [self.message_view(m) for m in shown[-MAX_MESSAGES:]]

    def open_modals(self, user: User) -> list[dict[str, Any]]:
        """Forms the bot opened for this member that nobody submitted yet."""
        return [
            {"interaction": str(i.id), **i.modal}
            for i in self.emu.interactions.values()
            if i.modal is not None and i.user is user and i.id not in self.closed_modals
        ]

    def violations(self) -> list[dict[str, Any]]:
        return [
            {"rule": v.rule, "detail": v.detail, "at": self.emu.clock.iso(v.at)}
            for v in self.emu.violations
        ]

    def commands(self) -> list[dict[str, Any]]:
        """Every slash command the bot synced, flattened to "group sub" with its options."""
        synced = [*self.emu.global_commands, *self.emu.guild_commands.get(self.emu.guild.id, [])]
        out: dict[str, dict[str, Any]] = {}
        for cmd in synced:
            if cmd.get("type", 1) != 1:
                continue
            subs = [o for o in cmd.get("options", []) if o["type"] == SUB_COMMAND]
            if subs:
                for sub in subs:
                    name = f"{cmd['name']} {sub['name']}"
                    out[name] = {
                        "name": name,
                        "description": sub.get("description", ""),
                        "options": sub.get("options", []),
                    }
            else:
                out[cmd["name"]] = {
                    "name": cmd["name"],
                    "description": cmd.get("description", ""),
                    "options": cmd.get("options", []),
                }
        return sorted(out.values(), key=lambda c: c["name"])

    # -- acting as a member ---------------------------------------------------------------------
    def options(self, command: str, raw: dict[str, Any]) -> dict[str, Any]:
        """The page's option values turned into what ``send_slash`` takes (users, uploads...)."""
        spec = next((c for c in self.commands() if c["name"] == command), None)
        if spec is None:
            raise BadRequest(f"the bot has no command /{command}")
        types = {o["name"]: o["type"] for o in spec["options"]}
        out: dict[str, Any] = {}
        for name, value in raw.items():
            if value in (None, ""):
                continue
            kind = types.get(name)
            if kind is None:
                raise BadRequest(f"/{command} has no option {name!r}")
            out[name] = self._option_value(kind, name, value)
        missing = [o["name"] for o in spec["options"] if o.get("required") and o["name"] not in out]
        if missing:
            raise BadRequest(f"/{command} needs {', '.join(missing)}")
        return out

    def _option_value(self, kind: int, name: str, value: Any) -> Any:
        world = self.emu.world
        try:
            if kind == ATTACHMENT:
                data = base64.b64decode(value["data"], validate=True)
                if len(data) > MAX_UPLOAD:
                    raise BadRequest(f"{name}: files over {MAX_UPLOAD // 2**20} MiB are refused")
                return self.emu.upload(str(value.get("filename") or "upload.png"), data)
            if kind == USER:
                return world.users[int(value)]
            if kind == CHANNEL:
                return world.channels[int(value)]
            if kind == ROLE:
                return self.emu.guild.roles[int(value)]
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise BadRequest(f"option {name}: {value!r} is not valid here") from None
        return value

    async def act(self, body: dict[str, Any]) -> dict[str, Any]:
        user = self.user(body.get("as"))
        action = body.get("action")
        try:
            if action == "slash":
                channel = self.channel(body.get("channel"), user)
                command = str(body.get("command", "")).strip().lstrip("/")
                options = self.options(command, body.get("options") or {})
                iid = await self.emu.send_slash(command, options, user=user, channel=channel)
            elif action == "click":
                iid = await self.emu.click(
                    int(body["message"]),
                    str(body["custom_id"]),
                    user=user,
                    values=body.get("values"),
                )
            elif action == "modal":
                opened_by = int(body["interaction"])
                iid = await self.emu.submit_modal(
                    opened_by, dict(body.get("values") or {}), user=user
                )
                self.closed_modals.add(opened_by)
            elif action == "dismiss":
                self.closed_modals.add(int(body["interaction"]))
                return {}
            elif action == "react":
                await self.emu.add_reaction(int(body["message"]), str(body["emoji"]), user)
                return {}
            else:
                raise BadRequest(f"unknown action {action!r}")
        except EmulatorUsageError as exc:
            raise BadRequest(str(exc)) from None
        except (KeyError, TypeError, ValueError):
            raise BadRequest(f"incomplete {action} request") from None
        return {"interaction": str(iid)}


def _command_name(data: dict[str, Any]) -> str:
    parts = [data.get("name", "")]
    options = data.get("options") or []
    while options and options[0].get("type") in (1, 2):
        parts.append(options[0]["name"])
        options = options[0].get("options") or []
    return " ".join(parts)


def make_app(emu: Emulator) -> web.Application:
    """The page (``static/``), its JSON API and the images, for one emulator."""
    api = PlaygroundApi(emu)
    app = web.Application(client_max_size=MAX_UPLOAD * 2)

    async def index(_: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    async def world(_: web.Request) -> web.Response:
        return web.json_response({**api.world(), "commands": api.commands()})

    async def state(request: web.Request) -> web.Response:
        user = api.user(request.query.get("as"))
        channel = api.channel(request.query.get("channel"), user)
        return web.json_response(
            {
                "messages": api.messages(channel, user),
                "modals": api.open_modals(user),
                "violations": api.violations(),
                "ready": bool(api.commands()),
            }
        )

    async def act(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            raise BadRequest("the request is not JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("the request must be a JSON object")
        return web.json_response(await api.act(body))

    async def attachment(request: web.Request) -> web.Response:
        try:
            att = emu.attachments[int(request.match_info["attachment_id"])]
        except (KeyError, ValueError):
            raise web.HTTPNotFound() from None
        return web.Response(body=att.data, content_type=att.content_type)

    app.router.add_get("/", index)
    app.router.add_static("/static", STATIC)
    app.router.add_get("/api/world", world)
    app.router.add_get("/api/state", state)
    app.router.add_post("/api/act", act)
    app.router.add_get("/attachments/{attachment_id}/{filename}", attachment)
    return app
