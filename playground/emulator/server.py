"""`Emulator`: a loopback Discord (gateway + REST) that the real discord.py client talks to.

Tests drive it like Discord's users would (`send_slash`, `click`, `submit_modal`,
`add_reaction`) and assert on what the bot sent (`messages_in`, `interaction_responses`,
`requests`, `violations`), waiting with `wait_for` instead of sleeping. The class only
assembles the halves: the shared state (`core.py`), acting as users (`actions.py`), waiting and
queries (`assertions.py`), the REST routes (`rest.py`) and the gateway (`gateway.py`).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .actions import UserActions
from .assertions import Assertions
from .core import API
from .faults import Fault
from .rest import Rest
from .state import RecordedRequest


class Emulator(UserActions, Assertions):
    """One emulated Discord: a default world (see `World.build_default`) unless told otherwise.

    Options (all keyword): token, bot_name, default_world, response_deadline, token_lifetime,
    heartbeat_interval_ms, default_upload_limit; see `EmulatorCore`.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.rest = Rest(self)
        self._runner: web.AppRunner | None = None

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

    async def _serve_attachment(self, request: web.Request) -> web.StreamResponse:
        att = self.attachments.get(int(request.match_info["attachment_id"]))
        if att is None:
            return web.Response(status=404)
        return web.Response(body=att.data, content_type=att.content_type)

    # -- what Discord does to the bot, set up by a test -------------------------------------
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
