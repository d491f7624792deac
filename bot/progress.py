"""Progress on the waiting message: queue position, then "step x of n" with a small preview.

Edits are throttled per job (``settings.discord.progress_interval_s``) because Discord rate-limits
message edits and punishes a flood of 429s; intermediate steps are simply skipped. Edits run as
background tasks so a slow Discord never slows the GPU worker, and the final result waits for a
job's pending edit so a late progress edit can never overwrite the result.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import discord
from PIL import Image

from bot.delivery import token_alive

if TYPE_CHECKING:
    from core.jobs import Job

log = logging.getLogger(__name__)

PREVIEW_SIDE = 256
MAX_FINISHED = 10_000  # job ids remembered as finished (late progress events are dropped)


class Throttle:
    """At most one event per key every ``interval`` seconds; the first always passes."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}

    def ready(self, key: str) -> bool:
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            return False
        self._last[key] = now
        return True

    def would_pass(self, key: str) -> bool:
        last = self._last.get(key)
        return last is None or self.clock() - last >= self.interval

    def forget(self, key: str) -> None:
        self._last.pop(key, None)


def preview_png(image: Image.Image, side: int = PREVIEW_SIDE) -> bytes:
    """A small JPEG of the current latents' decode; cheap to upload every 1.5 s."""
    img = image.convert("RGB")
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=70)
    return buf.getvalue()


def progress_text(step: int, total: int) -> str:
    filled = round(10 * step / max(total, 1))
    return f"Generating\u2026 step {step} of {total} `{'#' * filled}{'-' * (10 - filled)}`"


def queue_text(position: int | None, eta_s: float | None) -> str:
    if position is None:
        return "Queued."
    eta = f", about {duration_text(eta_s)}" if eta_s is not None else ""
    return f"Queued: position {position}{eta}."


def duration_text(seconds: float) -> str:
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    return f"{round(seconds / 60)} min"


class ProgressEditor:
    """Throttled, ordered edits of a job's interaction message."""

    def __init__(self, client: discord.Client, interval_s: float) -> None:
        self.client = client
        self.throttle = Throttle(interval_s)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._finished: dict[str, None] = {}  # insertion-ordered set, bounded below
        self._closed = False  # the client is closing: its HTTP session goes away
        self.edits = 0  # for tests and the bench

    def update(
        self, job: Job, content: str, preview: bytes | None = None, *, force: bool = False
    ) -> bool:
        """Schedule an edit unless one ran for this job too recently; True if scheduled."""
        if self._closed or job.id in self._finished or not token_alive(job.delivery):
            return False
        pending = self._tasks.get(job.id)
        if pending is not None and not pending.done():
            return False  # an edit is still on its way; this step is skipped
        if not self.throttle.ready(job.id) and not force:
            return False
        self._tasks[job.id] = asyncio.create_task(self._edit(job, content, preview))
        return True

    def would_edit(self, job: Job) -> bool:
        """Whether a progress update now would be sent (so callers can skip preparing one)."""
        pending = self._tasks.get(job.id)
        return (
            not self._closed
            and job.id not in self._finished
            and token_alive(job.delivery)
            and (pending is None or pending.done())
            and self.throttle.would_pass(job.id)
        )

    async def finish(self, job_id: str) -> None:
        """The result is about to be delivered: wait for the pending edit, refuse later ones."""
        self._finished[job_id] = None
        while len(self._finished) > MAX_FINISHED:
            self._finished.pop(next(iter(self._finished)))
        await self.settle(job_id)

    async def settle(self, job_id: str) -> None:
        """Wait for the job's pending edit, so that the final result lands after it."""
        task = self._tasks.pop(job_id, None)
        self.throttle.forget(job_id)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def close(self) -> None:
        """No edit starts after this (the worker may still report a step while the client
        closes); the pending ones finish first."""
        self._closed = True
        for job_id in list(self._tasks):
            await self.settle(job_id)

    async def _edit(self, job: Job, content: str, preview: bytes | None) -> None:
        delivery = job.delivery
        webhook = discord.Webhook.partial(
            int(delivery["application_id"]), delivery["token"], client=self.client
        )
        # A text-only edit (a step whose preview was withheld, cancelled, stopped) clears the
        # previous preview: nothing unchecked or stale stays on the message.
        files = [discord.File(io.BytesIO(preview), filename=f"{job.id}_preview.jpg")]
        kwargs: dict[str, Any] = {
            "content": content,
            "attachments": files if preview is not None else [],
        }
        try:
            await webhook.edit_message(delivery.get("message_id") or "@original", **kwargs)  # type: ignore[arg-type]
            self.edits += 1
        except discord.HTTPException as exc:
            # Progress is a courtesy: a failed edit is logged, never retried, never fatal.
            log.info("job %s: progress edit failed (%s)", job.id, exc.status)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:  # a dropped connection too
            log.info("job %s: progress edit failed (%s)", job.id, type(exc).__name__)
