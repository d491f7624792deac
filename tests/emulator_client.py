"""Point the real discord.py at an emulator: `Route.BASE` and the gateway URL, restored after.

Both are undocumented class attributes of discord.py; `tests/test_emulator.py` has a canary
test that fails loudly if a discord.py upgrade renames them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

from playground.emulator import Emulator


@contextlib.contextmanager
def patch_discord(emu: Emulator) -> Iterator[Emulator]:
    """Within the block every discord.Client talks to `emu` instead of discord.com."""
    import discord.gateway
    import discord.http
    import yarl

    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = emu.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(emu.gateway_url)
    try:
        yield emu
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway


@contextlib.asynccontextmanager
async def running_emulator(**kwargs) -> AsyncIterator[Emulator]:
    """Start an emulator, patch discord.py at it, and clean both up afterwards."""
    emu = Emulator(**kwargs)
    await emu.start()
    try:
        with patch_discord(emu):
            yield emu
    finally:
        await emu.stop()
