"""End to end: the real discord.py bot, real worker and tiny diffusion model, real SQLite store,
against the loopback Discord emulator. Each test is one thing a community member would do."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.client import ImagineBot, start_bot, stop_bot
from bot.services import Services
from generation.config import Settings
from generation.jobs import JobStatus
from generation.store import Store
from generation.worker import Worker

GRID_BUTTONS = 15  # U1-4, V1-4 subtle, V1-4 strong, reroll, remix, delete


@dataclass
class Harness:
    emu: Any
    settings: Settings
    store: Store
    engine: Any
    bot: ImagineBot | None = None

    async def start(self) -> ImagineBot:
        worker = Worker(
            self.store,
            self.engine,
            self.settings,
            postprocess=_postprocess(self.settings, self.store),
        )
        services = Services(
            settings=self.settings, store=self.store, engine=self.engine, worker=worker
        )
        self.bot = await start_bot(services, timeout=20)
        await self.emu.wait_until_connected()
        return self.bot

    async def stop(self, *, finish_running: bool = True) -> None:
        if self.bot is not None:
            await stop_bot(self.bot, finish_running=finish_running)
            self.bot = None

    async def imagine(self, prompt: str, **options: Any) -> int:
        user = options.pop("user", None)
        channel = options.pop("channel", None)
        return await self.emu.send_slash(
            "imagine", {"prompt": prompt, **options}, user=user, channel=channel
        )

    async def result_of(self, iid: int, timeout: float = 120) -> Any:
        """The message that carries a finished job's images for interaction ``iid``."""
        return await self.emu.wait_for(
            lambda: _with_files(self.emu.original_message(iid)), timeout, f"result of {iid}"
        )

    async def delivered(self, iid: int, timeout: float = 30) -> Any:
        """The job of interaction ``iid`` once the store says it was delivered."""
        job = await self.job_for(iid)
        for _ in range(int(timeout / 0.05)):
            job = await self.store.get_job(job.id)
            if job.delivered_at is not None:
                return job
            await asyncio.sleep(0.05)
        raise AssertionError(f"job {job.id} was not marked delivered")

    async def job_for(self, iid: int) -> Any:
        """The job row created for interaction ``iid`` (matched by its token)."""
        token = self.emu.interaction(iid).token

        async def find() -> Any:
            async with self.store.db.execute("SELECT id FROM jobs") as cur:
                ids = [r[0] for r in await cur.fetchall()]
            for job_id in ids:
                job = await self.store.get_job(job_id)
                if job and job.delivery.get("token") == token:
                    return job
            return None

        for _ in range(400):
            job = await find()
            if job is not None:
                return job
            await asyncio.sleep(0.05)
        raise AssertionError(f"no job for interaction {iid}")


def _postprocess(settings: Settings, store: Store) -> Any:
    from bot.runner import make_postprocess

    return make_postprocess(settings, store)


def _with_files(msg: Any) -> Any:
    return msg if msg is not None and msg.attachments and msg.components else None


@pytest.fixture
async def harness(discord_emulator, tiny_engine, tmp_path: Path) -> AsyncIterator[Harness]:
    emu = discord_emulator
    settings = Settings(
        data_dir=tmp_path,
        model={"name": "tiny", "device": "cpu", "default_steps": 2},
        discord={
            "token": emu.token,
            "api_base": emu.api_base,
            "gateway_url": emu.gateway_url,
            "dev_guilds": [emu.guild.id],
            "progress_interval_s": 0.2,
        },
    )
    store = await Store.open(settings.db_path)
    h = Harness(emu, settings, store, tiny_engine)
    await h.start()
    try:
        yield h
    finally:
        await h.stop()
        await store.close()


async def test_imagine_defers_shows_progress_and_delivers_grid_with_buttons(
    harness: Harness,
) -> None:
    emu = harness.emu
    iid = await harness.imagine("a lighthouse at dusk --ar 3:2 --seed 7")
    inter = await emu.wait_for_response(iid, timeout=3)
    assert inter.acknowledged
    result = await harness.result_of(iid)
    assert len(result.custom_ids()) == GRID_BUTTONS
    assert "seed" in result.content and "7" in result.content
    assert f"<@{emu.alice.id}>" in result.content
    edits = [r for r in emu.interaction_responses(iid) if r.method == "PATCH"]
    texts = [str((r.json or {}).get("content", "")) for r in edits]
    assert any("position" in t or "Queued" in t for t in texts), texts
    assert any("step" in t for t in texts), texts
    grid = Image.open(io.BytesIO(result.attachments[0].data))
    assert grid.width > grid.height  # 3:2 grid of 3:2 images
    assert not emu.violations
    job = await harness.delivered(iid)
    assert job.status == JobStatus.DONE
