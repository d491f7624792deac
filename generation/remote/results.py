"""The bot's end of the results stream: reading, re-reading and acknowledging worker results,
and turning a result's fields back into a ``GenerationResult``.

Why apart from ``RemoteWorker``: the consumer-group plumbing (where to resume after a restart,
NOGROUP after Redis lost its data, results whose read reply was lost) is the same whatever the
bot does with a result; the dispatcher only hands in what to do with each batch of entries.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError, ResponseError

from core.jobs import Job
from generation.remote import protocol
from generation.remote.protocol import Keys

log = logging.getLogger("generation.remote.dispatcher")  # operators grep the bot side's log

# A result this bot was handed but has not acknowledged for this long is read again (every
# 10 watch rounds); one being recorded right now is skipped.
RESULT_REREAD_MS = 5_000

# Acknowledge a result and clear the job's inflight mark if it is still this dispatch's.
# KEYS: results stream, inflight hash. ARGV: group, result entry id, job id, dispatch token.
ACK_RESULT = """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if ARGV[4] ~= '' and redis.call('HGET', KEYS[2], ARGV[3]) == ARGV[4] then
  redis.call('HDEL', KEYS[2], ARGV[3])
end
return 1
"""

Entries = list[tuple[Any, dict[bytes, bytes] | None]]
Handler = Callable[[Entries], Awaitable[None]]


class ResultStream:
    """The results stream as the bot's consumer group sees it."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._ack = redis.register_script(ACK_RESULT)

    async def read(self, handle: Handler) -> None:
        """Hand every result to ``handle`` as it arrives, forever."""
        position = "0"  # first what this bot read before a restart but never acknowledged
        while True:
            try:
                reply = await self.redis.xreadgroup(
                    protocol.BOT_GROUP,
                    protocol.BOT_CONSUMER,
                    {self.keys.results: position},
                    count=100,
                    block=None if position == "0" else 1000,
                )
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await protocol.ensure_group(self.redis, self.keys.results, protocol.BOT_GROUP)
                continue
            except (RedisError, OSError) as exc:
                log.warning("remote queue: Redis unavailable (%s); retrying", exc)
                await asyncio.sleep(0.5)
                continue
            if position == "0":
                position = ">"
            await handle([(eid, f) for _s, batch in reply or [] for eid, f in batch])

    async def reread(self, handle: Handler) -> None:
        """Results delivered to this bot but never seen: the reply to a read was lost (Redis
        restarted, or a crashed bot's blocked read was still open when they arrived)."""
        reply = await self.redis.xautoclaim(
            self.keys.results,
            protocol.BOT_GROUP,
            protocol.BOT_CONSUMER,
            min_idle_time=RESULT_REREAD_MS,
            start_id="0-0",
            count=100,
        )
        await handle(reply[1])

    async def ack(self, eid: Any, fields: dict[bytes, bytes], *, clear: bool = True) -> None:
        """Acknowledge (and drop) a result; ``clear`` also ends its dispatch's inflight mark."""
        job_id = protocol.text(fields, "job") or ""
        token = protocol.text(fields, "token", "") if clear else ""
        for attempt in range(120):  # Redis restarting: keep trying for about a minute
            try:
                await self._ack(
                    keys=[self.keys.results, self.keys.inflight],
                    args=[protocol.BOT_GROUP, eid, job_id, token or ""],
                )
                return
            except Exception as exc:  # noqa: BLE001
                if attempt == 0:
                    log.warning("job %s: cannot acknowledge its result yet (%s)", job_id, exc)
                await asyncio.sleep(0.5)


def remember(history: OrderedDict[str, str], job_id: str, worker: str) -> None:
    """Bounded: operators ask about recent jobs only."""
    history[job_id] = worker
    while len(history) > 10_000:
        history.popitem(last=False)


def decode_result(job: Job, fields: dict[bytes, bytes]) -> Any:
    """The worker's PNGs as a ``GenerationResult`` for post-processing (post thread)."""
    from PIL import Image

    from generation.engine import GenerationResult
    from generation.request import GenerationRequest

    count = int(protocol.text(fields, "n") or 0)
    images = []
    for i in range(count):
        with Image.open(io.BytesIO(fields[f"img{i}".encode()])) as im:
            images.append(im.convert("RGB"))
    return GenerationResult(
        images=images,
        seeds=json.loads(protocol.text(fields, "seeds") or "[]"),
        request=GenerationRequest.from_params(job.params),
        width=int(protocol.text(fields, "width") or images[0].width),
        height=int(protocol.text(fields, "height") or images[0].height),
        model=protocol.text(fields, "model") or "",
        timings={"generate_s": float(protocol.text(fields, "seconds") or 0.0)},
    )
