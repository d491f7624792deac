"""Deleting users' files once the retention settings say they are no longer kept.

Why: uploads (init images) can be anyone's photos and results can be private prompts' images;
an admin must be able to say how long the bot keeps them (``retention.*`` in the README). Job
rows stay (history, fair-share accounting, "who made this?" by hash or watermark); only the
files go, and a job whose images went says so when someone presses one of its buttons.

Only finished jobs lose files: a queued or running job's init image is still needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from core.config import Settings
from core.store import Store

log = logging.getLogger(__name__)

DAY_S = 86_400.0


@dataclass
class Swept:
    uploads: int = 0
    results: int = 0
    describes: int = 0


async def sweep(store: Store, settings: Settings, *, now: float | None = None) -> Swept:
    """Delete expired uploads and result folders once; returns how many went."""
    now = time.time() if now is None else now
    swept = Swept()
    keep = settings.retention
    images_dir = Path(settings.images_dir).resolve()
    if keep.uploads_days > 0:
        cutoff = now - keep.uploads_days * DAY_S
        inputs = images_dir / "inputs"
        candidates = await asyncio.to_thread(_older_files, inputs, cutoff)
        if candidates:
            unfinished = await store.unfinished_job_ids([p.stem for p in candidates])
            for path in candidates:
                if path.stem not in unfinished:
                    with contextlib.suppress(FileNotFoundError):
                        await asyncio.to_thread(path.unlink)
                        swept.uploads += 1
    if keep.results_days > 0:
        cutoff = now - keep.results_days * DAY_S
        for job_id, folder in await store.results_finished_before(cutoff):
            path = Path(folder).resolve()
            if path != images_dir and images_dir in path.parents:  # never outside images_dir
                await asyncio.to_thread(shutil.rmtree, path, True)
            await store.forget_results(job_id, f"kept {keep.results_days:g} days")
            swept.results += 1
        # /describe's suggestions go with the results of their age (their buttons then say so).
        swept.describes = await store.forget_describes_before(cutoff)
    if swept.uploads or swept.results:
        log.info("retention: deleted %d uploads and %d results", swept.uploads, swept.results)
    return swept


async def run(store: Store, settings: Settings) -> None:
    """Sweep now and then every ``retention.sweep_interval_s`` until cancelled."""
    while True:
        try:
            await sweep(store, settings)
        except Exception:  # noqa: BLE001 - try again next time; the bot carries on
            log.exception("retention sweep failed")
        await asyncio.sleep(settings.retention.sweep_interval_s)


def _older_files(folder: Path, cutoff: float) -> list[Path]:
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return []
    out = []
    for path in entries:
        with contextlib.suppress(FileNotFoundError):
            if path.is_file() and path.stat().st_mtime < cutoff:
                out.append(path)
    return out
