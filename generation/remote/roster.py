"""The bot's picture of the live GPU workers, read from their advertisements.

Why a separate class: which workers are alive (and how many slots they offer) is Redis
bookkeeping the dispatcher only needs the sum of; keeping it here leaves ``RemoteWorker`` with
the job handling. A worker is alive while its advertisement key has not expired.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from prometheus_client import Gauge

from core import metrics
from generation.remote import protocol
from generation.remote.protocol import Keys

log = logging.getLogger("generation.remote.dispatcher")  # operators grep the bot side's log

CONSUMER_FORGET_MS = 24 * 3600 * 1000

WORKER_BUSY = Gauge(
    "imagine_remote_worker_busy_fraction",
    "Share of its uptime a remote GPU worker spent generating.",
    ["worker"],
    registry=metrics.REGISTRY,
)
WORKER_JOBS = Gauge(
    "imagine_remote_worker_jobs",
    "Jobs a remote worker finished since it started.",
    ["worker"],
    registry=metrics.REGISTRY,
)
WORKER_RECLAIMS = Gauge(
    "imagine_remote_worker_reclaims",
    "Jobs a remote worker took over from dead workers since it started.",
    ["worker"],
    registry=metrics.REGISTRY,
)
WORKERS_LIVE = Gauge(
    "imagine_remote_workers",
    "Remote GPU workers alive for this bot's model.",
    registry=metrics.REGISTRY,
)


class WorkerRoster:
    """Live workers of one model and their slots, refreshed by ``read``."""

    def __init__(self, redis: Any, keys: Keys, model: str) -> None:
        self.redis = redis
        self.keys = keys
        self.model = model
        self.jobs_key = keys.jobs(model)
        self.workers: dict[str, dict[str, Any]] = {}  # live workers' advertisements
        self.capacity = 0  # free + busy slots of live workers of this model
        self._warned_models: set[str] = set()

    async def read(self) -> bool:
        """Re-read the advertisements; True when the number of slots changed."""
        names = sorted(n.decode() for n in await self.redis.smembers(self.keys.workers))
        values = await self.redis.mget([self.keys.worker(n) for n in names]) if names else []
        workers: dict[str, dict[str, Any]] = {}
        for name, value in zip(names, values, strict=True):
            if value is None:  # expired: the worker stopped refreshing it
                await self._drop(name)
                continue
            ad = json.loads(value)
            if ad.get("model") != self.model:
                self._warn_model(name, ad)
                continue
            workers[name] = ad
            WORKER_BUSY.labels(name).set(ad.get("busy_fraction", 0.0))
            WORKER_JOBS.labels(name).set(ad.get("jobs", 0))
            WORKER_RECLAIMS.labels(name).set(ad.get("reclaims", 0))
        self.workers = workers
        WORKERS_LIVE.set(len(workers))
        if workers:  # /healthz: a live worker is the GPU's sign of life (no progress events)
            metrics.health.worker_beat()
        capacity = sum(int(ad.get("slots", 1)) for ad in workers.values())
        if capacity == self.capacity:
            return False
        log.info("remote queue: %d workers, %d slots", len(workers), capacity)
        self.capacity = capacity
        return True

    async def _drop(self, name: str) -> None:
        await self.redis.srem(self.keys.workers, name)
        for gauge in (WORKER_BUSY, WORKER_JOBS, WORKER_RECLAIMS):
            with contextlib.suppress(KeyError):
                gauge.remove(name)

    def _warn_model(self, name: str, ad: dict[str, Any]) -> None:
        if name not in self._warned_models:
            self._warned_models.add(name)
            log.warning(
                "worker %s runs model %s, this bot serves %s: not used",
                name,
                ad.get("model"),
                self.model,
            )

    async def forget_gone_consumers(self) -> None:
        """Worker names (host-pid) pile up in the consumer group: drop those that hold nothing,
        are not alive and have been idle for a day."""
        for info in await self.redis.xinfo_consumers(self.jobs_key, protocol.WORKERS_GROUP):
            name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
            if (
                info["pending"] == 0
                and info["idle"] > CONSUMER_FORGET_MS
                and name not in self.workers
            ):
                await self.redis.xgroup_delconsumer(self.jobs_key, protocol.WORKERS_GROUP, name)
