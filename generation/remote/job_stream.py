"""A GPU worker's end of the jobs stream: reading, taking over, heartbeats, posting results,
and its advertisement key.

Why apart from ``GpuWorker``: these are the Redis Streams calls and their retry rules (NOGROUP
after Redis lost its data, connection errors while it restarts); the worker decides what to run
and when, this class only says how each step looks on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from generation.remote import protocol
from generation.remote.protocol import Keys

log = logging.getLogger("generation.remote.gpu_worker")  # operators grep the worker's log

# Errors after which the same command can simply be tried again.
RETRYABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
)

Entry = tuple[Any, dict[bytes, bytes]]


class JobStream:
    """The jobs stream of one model, as consumer ``name`` of the workers' group sees it."""

    def __init__(self, redis: Any, keys: Keys, model: str, name: str) -> None:
        self.redis = redis
        self.keys = keys
        self.name = name
        self.jobs_key = keys.jobs(model)
        self._finish = redis.register_script(protocol.FINISH)
        self._heartbeat = redis.register_script(protocol.HEARTBEAT)
        self._release = redis.register_script(protocol.RELEASE)

    async def ensure_groups(self) -> None:
        await protocol.ensure_group(self.redis, self.jobs_key, protocol.WORKERS_GROUP)
        await protocol.ensure_group(self.redis, self.keys.results, protocol.BOT_GROUP)

    async def read_own(self) -> list[Entry]:
        """Entries this name already owns (a restart under the same --name)."""
        mine = await self.redis.xreadgroup(
            protocol.WORKERS_GROUP, self.name, {self.jobs_key: "0"}, count=1000
        )
        return entries(mine)

    async def read_new(self, count: int, block_ms: int) -> list[Entry]:
        got = await self.redis.xreadgroup(
            protocol.WORKERS_GROUP, self.name, {self.jobs_key: ">"}, count=count, block=block_ms
        )
        return entries(got)

    async def claim_idle(self, count: int, min_idle_ms: int) -> list[Entry]:
        """Entries nobody refreshed for ``min_idle_ms``, now this worker's (``XAUTOCLAIM``)."""
        reply = await self.redis.xautoclaim(
            self.jobs_key,
            protocol.WORKERS_GROUP,
            self.name,
            min_idle_time=min_idle_ms,
            start_id="0-0",
            count=count,
        )
        return [(eid, fields) for eid, fields in reply[1] if fields]

    async def times_delivered(self, eid: Any) -> int:
        info = await self.redis.xpending_range(
            self.jobs_key, protocol.WORKERS_GROUP, min=eid, max=eid, count=1
        )
        return info[0]["times_delivered"] if info else 1

    async def finish(self, entry_id: str, job_id: str, fields: dict[str, Any]) -> bool:
        """Post the result and acknowledge the entry in one step; False when another worker
        owns it now. Retried until Redis answers: the result is kept here meanwhile."""
        flat: list[Any] = [protocol.WORKERS_GROUP, self.name, entry_id]
        for k, v in fields.items():
            flat += [k, v]
        while True:
            try:
                return bool(await self._finish(keys=[self.jobs_key, self.keys.results], args=flat))
            except RETRYABLE as exc:
                log.warning("job %s: cannot post its result yet (%s); retrying", job_id, exc)
                await asyncio.sleep(0.5)

    async def release(self, entry_id: str) -> None:
        """Give an entry not started back to the stream for other workers (best effort)."""
        with contextlib.suppress(Exception):
            await self._release(
                keys=[self.jobs_key], args=[protocol.WORKERS_GROUP, self.name, entry_id]
            )

    async def heartbeat(self, entry_ids: list[str]) -> list[str]:
        """Refresh the entries' idle time; returns those another worker has taken over."""
        lost = await self._heartbeat(
            keys=[self.jobs_key], args=[protocol.WORKERS_GROUP, self.name, *entry_ids]
        )
        return [eid.decode() if isinstance(eid, bytes) else eid for eid in lost]

    async def events(self, kind: str, jobs: list[tuple[str, str]], **extra: Any) -> None:
        """Progress events for (job id, entry id) pairs; lost ones do not matter."""
        with contextlib.suppress(Exception):  # progress only; the result is what counts
            pipe = self.redis.pipeline(transaction=False)
            for job_id, entry_id in jobs:
                pipe.xadd(
                    self.keys.results,
                    {
                        "type": kind,
                        "job": job_id,
                        "entry": entry_id,
                        "worker": self.name,
                        **extra,
                    },
                )
            await pipe.execute()

    async def advertise(self, ad: dict[str, Any], ttl_s: int) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.keys.worker(self.name), json.dumps(ad), ex=ttl_s)
        pipe.sadd(self.keys.workers, self.name)
        await pipe.execute()

    async def withdraw(self) -> None:
        """Stop advertising at once rather than when the key expires (best effort)."""
        with contextlib.suppress(Exception):
            await self.redis.delete(self.keys.worker(self.name))
            await self.redis.srem(self.keys.workers, self.name)


def entries(reply: Any) -> list[Entry]:
    """XREADGROUP's reply as (id, fields) pairs."""
    return [(eid, fields) for _name, found in reply or [] for eid, fields in found]
