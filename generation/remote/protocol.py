"""What the bot and the GPU workers agree on: key names, entry fields and the Lua scripts.

Keys (``prefix`` = ``imagine``):

- ``imagine:jobs:<model>``: jobs for workers of that model, consumer group ``workers``. The bot
  adds one entry per free worker slot, so this stream never holds a backlog (the fair order
  lives in the bot's scheduler, not here).
- ``imagine:results``: what workers report (``started``, ``done``, ``failed``), consumer group
  ``bot``. The bot acknowledges and deletes an entry only after the store has it.
- ``imagine:inflight``: hash job id -> jobs entry id, written together with the job entry and
  removed with its result: after a bot restart it tells which ``running`` jobs are still out.
- ``imagine:worker:<name>``: a worker's advertisement (JSON, expires unless refreshed);
  ``imagine:workers`` is the set of names to look at.

Exactly once: a worker posts a result and acknowledges its job in one script, and only while it
still owns the entry (``FINISH``), so a worker whose job was reclaimed while it was stalled
posts nothing; the bot records a job's result only while the job is ``running`` in the store
and delivery is claimed once with ``store.mark_delivered``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

PREFIX = "imagine"
WORKERS_GROUP = "workers"
BOT_GROUP = "bot"
BOT_CONSUMER = "bot"
# A job that took this many workers down with it (delivered and never acknowledged) fails
# instead of being handed to the next one.
MAX_DELIVERIES = 3


def model_key(model: str) -> str:
    """Stream-name-safe form of a model name (hub ids contain slashes, paths too)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", model).strip("_") or "model"


@dataclass(frozen=True)
class Keys:
    prefix: str = PREFIX

    def jobs(self, model: str) -> str:
        return f"{self.prefix}:jobs:{model_key(model)}"

    @property
    def results(self) -> str:
        return f"{self.prefix}:results"

    @property
    def inflight(self) -> str:
        return f"{self.prefix}:inflight"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    def worker(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"


DEFAULT_KEYS = Keys()


# Post a result and acknowledge the job, only while ``consumer`` still owns the job entry.
# KEYS: jobs stream, results stream. ARGV: group, consumer, entry id, then field/value pairs.
FINISH = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
return 1
"""

# Heartbeat: reset the idle time of the entries ``consumer`` still owns; returns the ids it
# lost (reclaimed by another worker meanwhile, or acknowledged by someone else).
# KEYS: jobs stream. ARGV: group, consumer, entry ids...
HEARTBEAT = """
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 0 or p[1][2] ~= ARGV[2] then
    lost[#lost + 1] = ARGV[i]
  else
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  end
end
return lost
"""

# A stopping worker gives back a job it holds but has not started: the same fields go to the
# end of the stream (for another worker) and the old entry is acknowledged, atomically.
# KEYS: jobs stream. ARGV: group, consumer, entry id.
RELEASE = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
local e = redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3])
if #e == 1 then redis.call('XADD', KEYS[1], '*', unpack(e[1][2])) end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
return 1
"""


async def ensure_group(redis: Any, stream: str, group: str) -> None:
    """Create the consumer group (and the stream) unless it exists."""
    from redis.exceptions import ResponseError

    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel loops and wait until they end, cancelling again while one still runs.

    Why again: a cancellation that lands inside a Redis command can come out of the client as
    a timeout or connection error, which the loops catch and retry; the next cancellation
    lands elsewhere (in a sleep) and ends them.
    """
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    while pending := [t for t in tasks if not t.done()]:
        await asyncio.wait(pending, timeout=0.5)
        for task in pending:
            task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            task.result()


def text(fields: dict[bytes, bytes], name: str, default: str | None = None) -> str | None:
    value = fields.get(name.encode())
    return value.decode() if value is not None else default


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def redis_client(url: str) -> Any:
    """An asyncio Redis client for ``url`` (``redis://``, ``rediss://`` or ``unix://``), with a
    clear error for a malformed URL."""
    import redis.asyncio as aioredis

    from core.errors import UserInputError

    try:
        return aioredis.from_url(url, health_check_interval=10)
    except ValueError as exc:
        raise UserInputError(
            f"queue.redis_url {url!r} is not a Redis URL ({exc}); "
            "use redis://host:6379/0 or unix:///path/redis.sock"
        ) from None
