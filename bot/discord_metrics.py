"""Discord's side of the metrics: failed API calls and the gateway connection.

The registry, ``/healthz`` and the worker's metrics live in ``core/metrics.py``; only what knows
about Discord (its HTTP API, its gateway events) lives here, so ``core`` never needs discord.py.
"""

from __future__ import annotations

from typing import Any

from aiohttp import TraceConfig
from prometheus_client import Counter

from core.metrics import REGISTRY, Health, health

DISCORD_API_ERRORS = Counter(
    "imagine_discord_api_errors",
    "Failed Discord API calls, by HTTP status (or 'network').",
    ["status"],
    registry=REGISTRY,
)


def record_discord_error(status: int | str | None) -> None:
    DISCORD_API_ERRORS.labels(status=str(status) if status is not None else "network").inc()


def watch_gateway(bot: Any, *, health: Health = health) -> None:
    """Keep ``health``'s gateway state in step with a ``discord.ext.commands.Bot``.

    Duck-typed (``bot.add_listener``) so this module needs no discord import.
    """

    async def connected(*_: Any) -> None:
        health.set_gateway(True)

    async def disconnected(*_: Any) -> None:
        health.set_gateway(False)

    health.expect_gateway()
    bot.add_listener(connected, "on_ready")
    bot.add_listener(connected, "on_resumed")
    bot.add_listener(disconnected, "on_disconnect")


def discord_http_trace() -> TraceConfig:
    """An aiohttp trace for discord.py (``discord.Client(http_trace=...)``) that counts failed
    Discord API calls by status, so the bot needs no bookkeeping of its own."""
    trace = TraceConfig()

    async def on_end(session: Any, ctx: Any, params: Any) -> None:
        if params.response.status >= 400:
            record_discord_error(params.response.status)

    async def on_exception(session: Any, ctx: Any, params: Any) -> None:
        record_discord_error(None)

    trace.on_request_end.append(on_end)
    trace.on_request_exception.append(on_exception)
    return trace
