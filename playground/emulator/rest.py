"""The REST half: the routes discord.py calls for the bot, each recorded and rule-checked.

Every request is recorded (method, route, JSON, uploaded files with bytes, emulator time, the
answer) before waiters are woken, so tests assert on what the bot really sent. The handlers live
in `routes/`, grouped by what they touch; the table is kept here whole because its order decides
which template a path matches (`/users/@me` before `/users/{user_id}`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .core import API
from .faults import Fault
from .routes.app_commands import CommandRoutes
from .routes.channels import ChannelRoutes
from .routes.directory import DirectoryRoutes
from .routes.interactions import InteractionRoutes
from .routes.shared import Messages
from .rules import ApiError
from .state import RecordedFile, RecordedRequest

if TYPE_CHECKING:
    from .core import EmulatorCore

Handler = Callable[..., Awaitable[Any]]


def json_response(body: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    """discord.py parses JSON only when the content-type is exactly application/json."""
    if body is None:
        return web.Response(status=204, headers=headers)
    return web.Response(body=json.dumps(body).encode(), status=status, headers=headers,
                        content_type="application/json")


class Rest:
    def __init__(self, emu: EmulatorCore) -> None:
        self.emu = emu
        self.routes: list[tuple[str, re.Pattern[str], str, Handler, bool]] = []
        messages = Messages(emu)
        directory = DirectoryRoutes(emu, messages)
        cmds = CommandRoutes(emu, messages)
        inter = InteractionRoutes(emu, messages)
        chan = ChannelRoutes(emu, messages)
        r = self._route
        r("GET", "/users/@me", directory.get_me)
        r("GET", "/users/{user_id}", directory.get_user)
        r("POST", "/users/@me/channels", directory.create_dm)
        r("GET", "/oauth2/applications/@me", directory.get_application)
        r("GET", "/applications/@me", directory.get_application)
        r("GET", "/gateway", directory.get_gateway)
        r("GET", "/gateway/bot", directory.get_gateway_bot)
        r("GET", "/applications/{app_id}/commands", cmds.get_commands)
        r("PUT", "/applications/{app_id}/commands", cmds.put_commands)
        r("POST", "/applications/{app_id}/commands", cmds.post_command)
        r("GET", "/applications/{app_id}/guilds/{guild_id}/commands", cmds.get_commands)
        r("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", cmds.put_commands)
        r("POST", "/applications/{app_id}/guilds/{guild_id}/commands", cmds.post_command)
        r("POST", "/interactions/{interaction_id}/{token}/callback", inter.callback, auth=False)
        r("POST", "/webhooks/{app_id}/{token}", inter.followup, auth=False)
        r("GET", "/webhooks/{app_id}/{token}/messages/{message_id}", inter.get_webhook_message,
          auth=False)
        r("PATCH", "/webhooks/{app_id}/{token}/messages/{message_id}",
          inter.edit_webhook_message, auth=False)
        r("DELETE", "/webhooks/{app_id}/{token}/messages/{message_id}",
          inter.delete_webhook_message, auth=False)
        r("GET", "/channels/{channel_id}", chan.get_channel)
        r("GET", "/channels/{channel_id}/messages", chan.get_history)
        r("POST", "/channels/{channel_id}/messages", chan.create_message)
        r("GET", "/channels/{channel_id}/messages/{message_id}", chan.get_message)
        r("PATCH", "/channels/{channel_id}/messages/{message_id}", chan.edit_message)
        r("DELETE", "/channels/{channel_id}/messages/{message_id}", chan.delete_message)
        r("POST", "/channels/{channel_id}/typing", chan.typing)
        r("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
          chan.add_reaction)
        r("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/{user_id}",
          chan.remove_reaction)
        r("GET", "/guilds/{guild_id}", directory.get_guild)
        r("GET", "/guilds/{guild_id}/channels", directory.get_guild_channels)
        r("GET", "/guilds/{guild_id}/roles", directory.get_roles)
        r("GET", "/guilds/{guild_id}/members/{user_id}", directory.get_member)

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
