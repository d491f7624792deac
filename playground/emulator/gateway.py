"""The gateway websocket: HELLO, IDENTIFY -> READY + GUILD_CREATE, heartbeats, RESUME, dispatch.

Frames are uncompressed JSON text: discord.py asks for zlib/zstd stream compression in the URL
but decompresses only binary frames, so text frames are understood as they are.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import WSMsgType, web

from .world import World

log = logging.getLogger(__name__)

DISPATCH, HEARTBEAT, IDENTIFY, PRESENCE, RESUME, RECONNECT = 0, 1, 2, 3, 6, 7
REQUEST_MEMBERS, INVALID_SESSION, HELLO, HEARTBEAT_ACK = 8, 9, 10, 11

GUILDS = 1 << 0
GUILD_MESSAGES = 1 << 9
GUILD_MESSAGE_REACTIONS = 1 << 10


class GatewayHost(Protocol):
    """What the gateway needs of the emulator, named here so gateway.py need not import the
    emulator that builds it."""

    token: str
    world: World

    @property
    def gateway_url(self) -> str: ...

    async def _notify(self) -> None: ...

    def _violate(self, rule: str, detail: str, interaction_id: int | None = None) -> None: ...


@dataclass
class Session:
    """One identified bot session; it outlives its socket so a RESUME can replay missed events."""

    id: str
    intents: int
    shard: list[int] | None
    ws: web.WebSocketResponse | None = None
    seq: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)
    heartbeats: int = 0
    resumes: int = 0

    @property
    def connected(self) -> bool:
        return self.ws is not None and not self.ws.closed


class Gateway:
    def __init__(self, emu: GatewayHost, *, heartbeat_interval_ms: int = 41250) -> None:
        self.emu = emu
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.sessions: dict[str, Session] = {}
        self.identify_count = 0
        self._sockets: set[web.WebSocketResponse] = set()
        self._last_beat: dict[int, float] = {}

    @property
    def live_sessions(self) -> list[Session]:
        return [s for s in self.sessions.values() if s.connected]

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        self._sockets.add(ws)
        session: Session | None = None
        self._last_beat[id(ws)] = time.monotonic()
        try:
            await self._send(ws, {"op": HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms},
                                  "s": None, "t": None})
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                session = await self._on_frame(ws, session, frame)
        finally:
            self._sockets.discard(ws)
            self._last_beat.pop(id(ws), None)
            if session is not None and session.ws is ws:
                session.ws = None
            await self.emu._notify()
        return ws

    async def _on_frame(self, ws: web.WebSocketResponse, session: Session | None,
                        frame: dict[str, Any]) -> Session | None:
        op, data = frame.get("op"), frame.get("d")
        if op == HEARTBEAT:
            self._check_heartbeat_gap(ws, session)
            if session is not None:
                session.heartbeats += 1
            await self._send(ws, {"op": HEARTBEAT_ACK, "d": None, "s": None, "t": None})
        elif op == IDENTIFY:
            if data.get("token") != self.emu.token:
                await ws.close(code=4004, message=b"Authentication failed.")
                return None
            session = await self._identify(ws, data)
        elif op == RESUME:
            session = await self._resume(ws, data)
        elif op == REQUEST_MEMBERS:
            await self._members_chunk(session, data)
        elif op == PRESENCE:
            pass
        else:
            log.debug("emulator gateway ignores op %s", op)
        return session

    def _check_heartbeat_gap(self, ws: web.WebSocketResponse, session: Session | None) -> None:
        """A heartbeat much later than asked means the bot's event loop was blocked (real
        Discord drops such a connection). Real time, not the emulator clock, which tests move."""
        now = time.monotonic()
        gap = now - self._last_beat.get(id(ws), now)
        self._last_beat[id(ws)] = now
        if gap > self.heartbeat_interval_ms / 1000 * 1.5:
            self.emu._violate("heartbeat-late", f"{gap:.2f} s between heartbeats "
                              f"(interval {self.heartbeat_interval_ms} ms)")

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> Session:
        self.identify_count += 1
        world = self.emu.world
        session = Session(id=secrets.token_hex(16), intents=int(data.get("intents", 0)),
                          shard=data.get("shard"), ws=ws)
        self.sessions[session.id] = session
        ready: dict[str, Any] = {
            "v": 10,
            "user": world.bot.payload() | {"verified": True, "mfa_enabled": False, "email": None},
            "guilds": [{"id": str(g), "unavailable": True} for g in world.guilds],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self.emu.gateway_url,
            "application": {"id": str(world.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "geo_ordered_rtc_regions": [],
            "user_settings": {},
        }
        if session.shard is not None:
            ready["shard"] = session.shard
        await self._dispatch_to(session, "READY", ready)
        if session.intents & GUILDS:  # without it Discord leaves the guilds unavailable
            for guild in world.guilds.values():
                await self._dispatch_to(session, "GUILD_CREATE", world.guild_payload(guild))
        await self.emu._notify()
        return session

    async def _resume(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> Session | None:
        session = self.sessions.get(data.get("session_id", ""))
        if session is None or data.get("token") != self.emu.token:
            await self._send(ws, {"op": INVALID_SESSION, "d": False, "s": None, "t": None})
            return None
        session.ws = ws
        session.resumes += 1
        last = data.get("seq") or 0
        for frame in [f for f in session.sent if f["s"] > last]:
            await self._send(ws, frame)
        await self._dispatch_to(session, "RESUMED", {})
        await self.emu._notify()
        return session

    async def _members_chunk(self, session: Session | None, data: dict[str, Any]) -> None:
        if session is None:
            return
        world = self.emu.world
        guild = world.guilds.get(int(data["guild_id"]))
        if guild is None:
            return
        members = [world.member_payload(world.users[u], guild) for u in guild.member_ids]
        chunk = {"guild_id": str(guild.id), "members": members, "chunk_index": 0, "chunk_count": 1,
                 "not_found": []}
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        await self._dispatch_to(session, "GUILD_MEMBERS_CHUNK", chunk)

    async def _send(self, ws: web.WebSocketResponse, frame: dict[str, Any]) -> None:
        if not ws.closed:
            await ws.send_str(json.dumps(frame))

    async def _dispatch_to(self, session: Session, event: str, data: dict[str, Any]) -> None:
        session.seq += 1
        frame = {"op": DISPATCH, "t": event, "s": session.seq, "d": data}
        session.sent.append(frame)
        if session.ws is not None:
            await self._send(session.ws, frame)

    async def dispatch(self, event: str, data: dict[str, Any], *, intent: int = 0) -> int:
        """Send an event to every live session (that asked for the intent); returns how many."""
        sent = 0
        for session in self.live_sessions:
            if intent and not session.intents & intent:
                continue
            await self._dispatch_to(session, event, data)
            sent += 1
        return sent

    async def reconnect_all(self) -> None:
        """Ask every client to reconnect (op 7), as Discord does during its maintenance."""
        for session in self.live_sessions:
            await self._send(session.ws, {"op": RECONNECT, "d": None, "s": None, "t": None})

    async def invalidate_all(self) -> None:
        """Op 9 (not resumable) to every live session, which is then forgotten."""
        for session in self.live_sessions:
            await self._send(session.ws, {"op": INVALID_SESSION, "d": False, "s": None, "t": None})
        self.sessions.clear()

    async def drop_all(self, code: int = 4000) -> None:
        """Cut every socket, as a network blip would; discord.py should RESUME."""
        for ws in list(self._sockets):
            await ws.close(code=code, message=b"emulator dropped the connection")

    async def close(self) -> None:
        await asyncio.gather(*(ws.close(code=1001) for ws in list(self._sockets)),
                             return_exceptions=True)
