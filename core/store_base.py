"""What every part of ``core.store.Store`` shares: the connection and the write lock.

Why a base of its own: ``Store`` is put together from one class per concern (jobs, the
interaction journal, moderation rows), and each of them writes through the same lock so that
multi-statement writes do not interleave on the one shared connection.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiosqlite

from core.jobs import Job


class StoreBase:
    """The open connection and the helpers the ``Store`` parts write and read jobs with."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self.db = db
        self.path = path

    @property
    def _job_lock(self) -> asyncio.Lock:
        # Created lazily so the core constructor stays as it is.
        lock = self.__dict__.get("_lock")
        if lock is None:
            lock = self.__dict__["_lock"] = asyncio.Lock()
        return lock

    async def _update(self, sql: str, args: tuple[Any, ...]) -> bool:
        async with self._job_lock:
            cur = await self.db.execute(sql, args)  # autocommit: one trip
        return cur.rowcount > 0

    async def _jobs(self, clause: str, args: tuple[Any, ...] | list[Any] = ()) -> list[Job]:
        rows = await self.db.execute_fetchall(f"SELECT * FROM jobs {clause}", tuple(args))
        return [Job.from_row(r) for r in rows]
