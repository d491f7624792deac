"""Files are kept only as long as the retention settings say; job rows stay."""

from __future__ import annotations

import os
from pathlib import Path

from core.config import Settings
from core.jobs import Job, JobKind
from core.retention import DAY_S, sweep
from core.store import Store

NOW = 1_900_000_000.0


async def _job(
    store: Store,
    job_id: str,
    *,
    status: str,
    finished_days_ago: float | None,
    folder: Path | None = None,
) -> None:
    await store.add_job(Job(id=job_id, user_id=1, kind=JobKind.IMAGINE, params={}, est_cost=1.0))
    finished = NOW - finished_days_ago * DAY_S if finished_days_ago is not None else None
    await store.db.execute(
        "UPDATE jobs SET status = ?, finished_at = ?, delivered_at = ?, result_dir = ? "
        "WHERE id = ?",
        (status, finished, finished, str(folder) if folder else None, job_id),
    )


def _old_file(path: Path, days: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"png")
    os.utime(path, (NOW - days * DAY_S, NOW - days * DAY_S))
    return path


async def test_expired_uploads_and_results_are_deleted_and_the_rest_kept(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, retention={"uploads_days": 7, "results_days": 30})
    images = settings.images_dir
    async with await Store.open(settings.db_path) as store:
        old_result = _old_file(images / "oldjob" / "0.png", 40).parent
        new_result = _old_file(images / "newjob" / "0.png", 1).parent
        await _job(store, "oldjob", status="done", finished_days_ago=40, folder=old_result)
        await _job(store, "newjob", status="done", finished_days_ago=1, folder=new_result)
        await _job(store, "waiting", status="queued", finished_days_ago=None)
        expired_upload = _old_file(images / "inputs" / "oldjob.png", 10)
        queued_upload = _old_file(images / "inputs" / "waiting.png", 10)  # still needed
        fresh_upload = _old_file(images / "inputs" / "newjob.png", 1)

        swept = await sweep(store, settings, now=NOW)

        assert (swept.uploads, swept.results) == (1, 1)
        assert not expired_upload.exists() and queued_upload.exists() and fresh_upload.exists()
        assert not old_result.exists() and new_result.exists()
        old = await store.get_job("oldjob")
        assert old is not None and old.result_dir is None
        assert "30 days" in old.delivery["files_expired"]
        assert (await sweep(store, settings, now=NOW)).results == 0  # nothing twice


async def test_zero_days_keeps_everything(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, retention={"uploads_days": 0, "results_days": 0})
    async with await Store.open(settings.db_path) as store:
        folder = _old_file(settings.images_dir / "j" / "0.png", 4000).parent
        await _job(store, "j", status="done", finished_days_ago=4000, folder=folder)
        upload = _old_file(settings.images_dir / "inputs" / "j.png", 4000)
        assert (await sweep(store, settings, now=NOW)).results == 0
        assert folder.exists() and upload.exists()
