"""The durable job store on a real SQLite file: life cycle, exactly-once delivery, recovery."""

from __future__ import annotations

import asyncio
import sqlite3
import string
from pathlib import Path

import pytest

from core.jobs import Job, JobKind, JobStatus, Processed, ProcessedImage, new_job_id
from core.store import SCHEMA_VERSION, Store, StoreError


@pytest.fixture
async def store(tmp_path: Path):
    s = await Store.open(tmp_path / "imagine.db")
    yield s
    await s.close()


def make_job(user: int = 1, **kw) -> Job:
    return Job(
        id=new_job_id(), user_id=user, kind=JobKind.IMAGINE, params={"prompt": "a cat"},
        est_cost=1.0, guild_id=10, channel_id=20, **kw,
    )


def processed(job_id: str, n: int = 2) -> Processed:
    return Processed(
        [ProcessedImage(i, 100 + i, Path(f"/data/{job_id}/{i}.png"), 64, 64, f"sha{i}", f"wm{i}")
         for i in range(n)],
        grid_path=Path(f"/data/{job_id}/grid.png"),
    )


async def test_job_round_trip_keeps_every_field(store: Store) -> None:
    parent = await store.add_job(make_job())
    job = make_job(
        user=2, parent_job_id=parent.id, parent_image_index=3, credited_user_ids=[1, 2],
        weight=2.0, delivery={"token": "abc", "app_id": 5},
    )
    job.kind = JobKind.VARIATION
    await store.add_job(job, now=123.0)
    got = await store.get_job(job.id)
    assert got == job
    assert (got.seq, got.created_at, got.status) == (parent.seq + 1, 123.0, JobStatus.QUEUED)
    assert await store.get_job("missing") is None


async def test_job_ids_are_short_and_safe_for_custom_ids() -> None:
    ids = {new_job_id() for _ in range(1000)}
    assert len(ids) == 1000
    allowed = set(string.ascii_lowercase + string.digits)
    assert all(len(i) == 10 and set(i) <= allowed for i in ids)


async def test_life_cycle_records_images_and_results(store: Store) -> None:
    job = await store.add_job(make_job())
    assert await store.mark_running(job.id, now=5.0)
    assert not await store.mark_running(job.id)  # only from queued
    images = await store.mark_done(job.id, processed(job.id), measured_seconds=1.5, now=9.0)
    assert [(i.index, i.seed, i.watermark_payload) for i in images] == [(0, 100, "wm0"), (1, 101, "wm1")]
    done = await store.get_job(job.id)
    assert done.status == JobStatus.DONE
    assert (done.started_at, done.finished_at, done.measured_seconds) == (5.0, 9.0, 1.5)
    assert done.result_dir == f"/data/{job.id}" and done.grid_path == f"/data/{job.id}/grid.png"
    assert done.attempts == 1
    assert (await store.get_image(job.id, 1)).sha256 == "sha1"
    assert await store.get_image(job.id, 7) is None


async def test_mark_done_ignores_a_job_that_is_no_longer_running(store: Store) -> None:
    job = await store.add_job(make_job())
    await store.mark_running(job.id)
    assert await store.mark_failed(job.id, "cancelled", status=JobStatus.CANCELLED)
    assert await store.mark_done(job.id, processed(job.id)) == []
    assert await store.images_for_job(job.id) == []
    assert (await store.get_job(job.id)).status == JobStatus.CANCELLED


async def test_failure_keeps_the_reason(store: Store) -> None:
    job = await store.add_job(make_job())
    await store.mark_running(job.id)
    assert await store.mark_failed(job.id, "image blocked: nudity", status=JobStatus.BLOCKED)
    got = await store.get_job(job.id)
    assert (got.status, got.error) == (JobStatus.BLOCKED, "image blocked: nudity")
    assert not await store.mark_failed(job.id, "again")  # final statuses stay final
    with pytest.raises(ValueError, match="cannot set status queued"):
        await store.mark_failed(job.id, "x", status=JobStatus.QUEUED)


async def test_cancel_only_touches_queued_jobs(store: Store) -> None:
    queued = await store.add_job(make_job())
    running = await store.add_job(make_job())
    await store.mark_running(running.id)
    assert await store.cancel(queued.id)
    assert not await store.cancel(running.id)
    assert (await store.get_job(queued.id)).status == JobStatus.CANCELLED
    assert [j.id for j in await store.queued_jobs()] == []


async def test_delivery_is_claimed_exactly_once_even_concurrently(store: Store) -> None:
    job = await store.add_job(make_job())
    assert not await store.mark_delivered(job.id)  # not finished yet: nothing to deliver
    await store.mark_running(job.id)
    await store.mark_done(job.id, processed(job.id))
    wins = await asyncio.gather(*(store.mark_delivered(job.id) for _ in range(20)))
    assert wins.count(True) == 1
    assert await store.undelivered_jobs() == []


async def test_update_delivery_merges(store: Store) -> None:
    job = await store.add_job(make_job(delivery={"token": "t", "message_id": None}))
    assert await store.update_delivery(job.id, {"message_id": 42}) == {"token": "t", "message_id": 42}
    assert await store.update_delivery(job.id, {"token": None}) == {"message_id": 42}


async def test_user_queries_and_counts(store: Store) -> None:
    a1 = await store.add_job(make_job(user=1))
    a2 = await store.add_job(make_job(user=1))
    await store.add_job(make_job(user=2))
    await store.mark_running(a1.id)
    assert [j.id for j in await store.jobs_for_user(1)] == [a2.id, a1.id]
    assert [j.id for j in await store.jobs_for_user(1, statuses=[JobStatus.RUNNING])] == [a1.id]
    assert len(await store.jobs_for_user(1, limit=1)) == 1


async def test_recover_requeues_running_and_lists_undelivered(tmp_path: Path) -> None:
    path = tmp_path / "imagine.db"
    async with await Store.open(path) as store:
        queued = await store.add_job(make_job())
        running = await store.add_job(make_job())
        finished = await store.add_job(make_job())
        delivered = await store.add_job(make_job())
        for job in (running, finished, delivered):
            await store.mark_running(job.id)
        for job in (finished, delivered):
            await store.mark_done(job.id, processed(job.id))
        await store.mark_delivered(delivered.id)
    # "Crash": the file is reopened by a new process.
    async with await Store.open(path) as store:
        recovery = await store.recover()
        assert recovery.requeued == 1
        assert [j.id for j in recovery.queued] == [queued.id, running.id]  # arrival order kept
        assert [j.id for j in recovery.undelivered] == [finished.id]
        assert (await store.get_job(running.id)).attempts == 1


async def test_kv_values_persist(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "db") as store:
        assert await store.get_value("k") is None
        await store.set_value("k", "1")
        await store.set_value("k", "2")
    async with await Store.open(tmp_path / "db") as store:
        assert await store.get_value("k") == "2"


async def test_corrupt_file_is_reported_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "imagine.db"
    path.write_bytes(b"definitely not a database" * 100)
    with pytest.raises(StoreError, match="corrupt or not an SQLite file.*left untouched"):
        await Store.open(path)
    assert path.read_bytes().startswith(b"definitely not")


async def test_damaged_sqlite_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "imagine.db"
    async with await Store.open(path):
        pass
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # keep the header, wreck the schema page
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="corrupt"):
        await Store.open(path)


async def test_missing_file_is_created_only_when_allowed(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        await Store.open(tmp_path / "nope.db", create=False)
    async with await Store.open(tmp_path / "sub" / "new.db") as store:
        assert await store.schema_version() == SCHEMA_VERSION


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "imagine.db"
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(StoreError, match="newer than this imagine-bot understands"):
        await Store.open(path)


async def test_every_job_write_is_committed_when_it_returns(store: Store) -> None:
    """Another process (a restart, a moderator's provenance lookup) sees each step at once."""

    def status_elsewhere(job_id: str) -> tuple[str, int]:
        con = sqlite3.connect(store.path)
        try:
            (status,) = con.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            (images,) = con.execute(
                "SELECT COUNT(*) FROM images WHERE job_id = ?", (job_id,)
            ).fetchone()
            return status, images
        finally:
            con.close()

    job = await store.add_job(make_job())
    assert status_elsewhere(job.id) == ("queued", 0)
    assert await store.mark_running(job.id)
    assert status_elsewhere(job.id) == ("running", 0)
    await store.mark_done(job.id, processed(job.id))
    assert status_elsewhere(job.id) == ("done", len(processed(job.id).images))
    assert await store.mark_delivered(job.id)
    assert not store.db.in_transaction
