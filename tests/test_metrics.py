"""Metrics endpoint and health: real aiohttp server on a loopback port, scraped over HTTP."""

from __future__ import annotations

import asyncio
import sys

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot import discord_metrics
from core import metrics
from core.config import Settings
from core.errors import UserInputError
from core.metrics import BusyTracker, Health, MetricsServer, start_metrics_server


class FakeClock:
    """Time that moves only when the test says so (no sleeps, no flaky timing)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sample(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and (labels is None or s.labels == labels):
                return s.value
    return None


@pytest.fixture
async def server():
    clock = FakeClock()
    health = Health(stale_after_s=30, clock=clock)
    srv = await MetricsServer("127.0.0.1", 0, health=health).start()
    srv.clock = clock
    yield srv
    await srv.stop()


async def get(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, resp.headers["Content-Type"], await resp.text()


async def test_metrics_endpoint_serves_prometheus_text_that_moves(server):
    _, ctype, before = await get(server.url + "/metrics")
    assert ctype.startswith("text/plain")
    images_before = sample(before, "imagine_images_made_total") or 0.0

    metrics.IMAGES_MADE.inc(4)
    metrics.record_moderation_block("prompt", ["sexual", "minors"])
    metrics.record_moderation_block("image", [])
    discord_metrics.record_discord_error(429)
    discord_metrics.record_discord_error(None)
    metrics.WORKER_ERRORS.labels(kind="oom").inc()
    metrics.set_queue_lengths({123: 3, None: 1})
    metrics.JOB_WAIT_SECONDS.observe(2.0)
    metrics.JOB_RUN_SECONDS.observe(0.3)

    status, _, after = await get(server.url + "/metrics")
    assert status == 200
    assert sample(after, "imagine_images_made_total") == images_before + 4
    assert (
        sample(after, "imagine_moderation_blocks_total", {"stage": "prompt", "category": "minors"})
        >= 1
    )
    assert (
        sample(after, "imagine_moderation_blocks_total", {"stage": "image", "category": "other"})
        >= 1
    )
    assert sample(after, "imagine_discord_api_errors_total", {"status": "429"}) >= 1
    assert sample(after, "imagine_discord_api_errors_total", {"status": "network"}) >= 1
    assert sample(after, "imagine_worker_errors_total", {"kind": "oom"}) >= 1
    assert sample(after, "imagine_queue_length", {"guild": "123"}) == 3
    assert sample(after, "imagine_queue_length", {"guild": "dm"}) == 1
    assert sample(after, "imagine_job_wait_seconds_count") >= 1
    assert sample(after, "imagine_job_run_seconds_bucket", {"le": "0.5"}) >= 1
    for name in ("imagine_gpu_busy_fraction", "imagine_worker_heartbeat_timestamp_seconds"):
        assert sample(after, name) is not None

    if sys.platform.startswith("linux"):
        assert sample(after, "process_resident_memory_bytes") > 0  # process collector
    import torch

    if not torch.cuda.is_available():  # GPU memory only appears where CUDA is in use
        assert sample(after, "imagine_gpu_memory_bytes") is None

    metrics.set_queue_lengths({123: 0})
    _, _, cleared = await get(server.url + "/metrics")
    assert sample(cleared, "imagine_queue_length", {"guild": "dm"}) is None


async def test_healthz_follows_gateway_and_worker(server):
    health, clock = server.health, server.clock
    status, ctype, body = await get(server.url + "/healthz")
    assert status == 503 and ctype.startswith("application/json")
    assert '"worker": "not started"' in body

    health.set_gateway(True)
    health.worker_started()
    status, _, body = await get(server.url + "/healthz")
    assert status == 200
    assert '"gateway": "connected"' in body and '"worker": "alive"' in body

    # Idle for a long time is fine: nothing to do is not a stall.
    clock.now += 3600
    assert (await get(server.url + "/healthz"))[0] == 200

    # Busy and beating: fine; busy and silent past the limit: stalled.
    health.worker_beat(busy=True)
    clock.now += 29
    assert (await get(server.url + "/healthz"))[0] == 200
    clock.now += 2
    status, _, body = await get(server.url + "/healthz")
    assert status == 503 and '"worker": "stalled"' in body and "no heartbeat for 31 s" in body

    health.worker_beat(busy=False)
    assert (await get(server.url + "/healthz"))[0] == 200

    health.set_gateway(False)
    status, _, body = await get(server.url + "/healthz")
    assert status == 503 and "Discord gateway disconnected" in body
    health.set_gateway(True)

    health.worker_stopped()
    health.worker_beat()  # a late beat from a stopping thread must not revive it
    status, _, body = await get(server.url + "/healthz")
    assert status == 503 and '"worker": "stopped"' in body


def test_gateway_counts_once_reported():
    health = Health()
    health.worker_started()
    ok, details = health.status()
    assert ok and details["gateway"] == "not reported"  # e.g. a worker-only process
    health.expect_gateway()
    ok, details = health.status()
    assert not ok and details["problems"] == ["Discord gateway not connected yet"]
    health.set_gateway(True)
    assert health.status()[0]


def test_health_without_gateway_requirement():
    health = Health(require_gateway=False)
    assert not health.status()[0]
    health.worker_started()
    ok, details = health.status()
    assert ok and details["gateway"] == "not reported"


def test_busy_fraction_over_sliding_window():
    clock = FakeClock()
    tracker = BusyTracker(window_s=60, clock=clock)
    assert tracker.fraction() == 0.0
    with tracker.busy():
        clock.now += 15
        assert tracker.fraction() == pytest.approx(0.25)  # in-progress work counts
    clock.now += 15
    assert tracker.fraction() == pytest.approx(0.25)
    with tracker.busy():
        clock.now += 30
    assert tracker.fraction() == pytest.approx(0.75)
    clock.now += 45  # the first interval has slid out of the window
    assert tracker.fraction() == pytest.approx(0.25)
    clock.now += 60
    assert tracker.fraction() == 0.0


def test_busy_history_stays_bounded_when_nobody_scrapes():
    clock = FakeClock()
    tracker = BusyTracker(window_s=60, clock=clock)
    for _ in range(10_000):  # a week of short jobs, no /metrics scrape
        with tracker.busy():
            clock.now += 1
        clock.now += 59
    assert len(tracker._intervals) <= 2


def test_busy_seconds_counter_moves():
    clock = FakeClock()
    tracker = BusyTracker(clock=clock)
    before = metrics.REGISTRY.get_sample_value("imagine_gpu_busy_seconds_total")
    with tracker.busy():
        clock.now += 2.5
    after = metrics.REGISTRY.get_sample_value("imagine_gpu_busy_seconds_total")
    assert after - before == pytest.approx(2.5)


async def test_server_is_off_by_default_and_binds_localhost():
    settings = Settings()
    assert settings.ops.metrics_host == "127.0.0.1"
    assert await start_metrics_server(settings, health=Health()) is None

    srv = await start_metrics_server(
        Settings(ops={"metrics_enabled": True, "metrics_port": 0, "health_stale_after_s": 7}),
        health=(h := Health()),
    )
    try:
        assert srv.url.startswith("http://127.0.0.1:") and srv.port > 0
        assert h.stale_after_s == 7
        assert (await get(srv.url + "/metrics"))[0] == 200
    finally:
        await srv.stop()


async def test_port_in_use_is_a_clear_error(server):
    with pytest.raises(
        UserInputError, match=r"cannot serve metrics on 127\.0\.0\.1:\d+.*metrics_port"
    ):
        await MetricsServer("127.0.0.1", server.port).start()


# --- the real worker on the tiny model --------------------------------------------------------


class Events:
    """A listener that remembers the order of events (the bot's listener in production)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def on_queued(self, job, estimate) -> None:
        self.seen.append("queued")

    async def on_started(self, job) -> None:
        self.seen.append("started")

    async def on_progress(self, job, event) -> None:
        self.seen.append("progress")

    async def on_done(self, job, images) -> None:
        self.seen.append("done")

    async def on_failed(self, job, reason) -> None:
        self.seen.append("failed")


async def test_scrape_while_worker_runs_tiny_jobs(tmp_path, tiny_engine, tiny_settings):
    from core.store import Store
    from generation.request import GenerationRequest
    from generation.worker import Worker

    settings = tiny_settings.model_copy(update={"data_dir": tmp_path})
    store = await Store.open(settings.db_path)
    metrics.health.reset()
    server = await MetricsServer("127.0.0.1", 0, health=metrics.health).start()
    worker = Worker(store, tiny_engine, settings, listener=(events := Events()))
    try:
        _, _, before = await get(server.url + "/metrics")
        # One user, so one job runs at a time (running cap) and the rest visibly wait.
        jobs = [
            await worker.submit(
                GenerationRequest(f"a red fox {i}", seed=i, count=1, steps=2),
                user_id=10,
                guild_id=77,
            )
            for i in range(3)
        ]
        await worker.start()
        metrics.health.set_gateway(True)  # the bot does this when the gateway is up
        _, _, during = await get(server.url + "/metrics")
        await worker.join()
        assert sample(during, "imagine_queue_length", {"guild": "77"}) >= 1

        status, _, after = await get(server.url + "/metrics")
        assert status == 200
        statuses = [(await store.get_job(j.id)).status.value for j in jobs]
        assert statuses == ["done"] * 3, events.seen

        def delta(name: str, labels: dict[str, str] | None = None) -> float:
            return (sample(after, name, labels) or 0.0) - (sample(before, name, labels) or 0.0)

        assert delta("imagine_images_made_total") == 3
        assert delta("imagine_jobs_finished_total", {"status": "done"}) == 3
        assert delta("imagine_job_wait_seconds_count") == 3
        assert delta("imagine_job_run_seconds_count") == 3
        assert delta("imagine_gpu_busy_seconds_total") > 0
        assert 0 < sample(after, "imagine_gpu_busy_fraction") <= 1
        assert sample(after, "imagine_worker_heartbeat_timestamp_seconds") > 0
        assert sample(after, "imagine_queue_length", {"guild": "77"}) is None  # queue drained
        assert "progress" in events.seen  # the bot's listener still hears everything

        status, _, body = await get(server.url + "/healthz")
        assert status == 200, body
        assert '"worker": "alive"' in body and '"worker_busy": false' in body
    finally:
        await worker.stop()
        status, _, body = await get(server.url + "/healthz")
        await server.stop()
        await store.close()
        metrics.health.reset()
    assert status == 503 and '"worker": "stopped"' in body


# --- Discord API errors, counted from discord.py's own HTTP session ----------------------------


async def test_discord_http_trace_counts_failed_api_calls(discord_emulator):
    import discord

    def value(status: str) -> float:
        labels = {"status": status}
        return metrics.REGISTRY.get_sample_value("imagine_discord_api_errors_total", labels) or 0.0

    before = value("401")
    client = discord.Client(intents=discord.Intents.none(), http_trace=discord_metrics.discord_http_trace())
    try:
        with pytest.raises(discord.LoginFailure):
            await client.login("wrong-token")
    finally:
        await client.close()
    assert value("401") == before + 1


async def test_discord_http_trace_counts_network_failures():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/api/v10/users/@me"
    before = (
        metrics.REGISTRY.get_sample_value("imagine_discord_api_errors_total", {"status": "network"})
        or 0.0
    )
    async with aiohttp.ClientSession(trace_configs=[discord_metrics.discord_http_trace()]) as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(dead)
    after = metrics.REGISTRY.get_sample_value(
        "imagine_discord_api_errors_total", {"status": "network"}
    )
    assert after == before + 1


class RecordingHealth(Health):
    """Health that also remembers every gateway change, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.changes: list[bool] = []
        self.resumed = asyncio.Event()

    def set_gateway(self, connected: bool) -> None:
        super().set_gateway(connected)
        self.changes.append(connected)
        if self.changes[-2:] == [False, True]:
            self.resumed.set()


async def test_watch_gateway_follows_the_real_connection(discord_emulator):
    import discord
    from discord.ext import commands

    health = RecordingHealth()
    health.worker_started()
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.none())
    discord_metrics.watch_gateway(bot, health=health)
    assert health.status()[1]["gateway"] == "not connected yet"
    task = asyncio.create_task(bot.start(discord_emulator.token))
    try:
        await asyncio.wait_for(bot.wait_until_ready(), 30)
        assert health.status()[0] and health.status()[1]["gateway"] == "connected"

        await discord_emulator.drop_gateway()  # a network blip: disconnect, then RESUME
        await asyncio.wait_for(health.resumed.wait(), 30)
        assert health.changes == [True, False, True]
        assert health.status()[0]
    finally:
        await bot.close()
        await asyncio.wait_for(task, 30)


async def test_failed_and_blocked_jobs_are_counted_apart(tmp_path, tiny_engine, tiny_settings):
    from core.jobs import JobBlocked
    from core.store import Store
    from generation.request import GenerationRequest
    from generation.worker import Worker, save_pngs

    settings = tiny_settings.model_copy(update={"data_dir": tmp_path})
    save = save_pngs(settings.images_dir)

    def postprocess(job, result):
        prompt = job.params["prompt"]
        if "blockme" in prompt:
            raise JobBlocked("this image was blocked by the server's policy")
        if "crashme" in prompt:
            raise RuntimeError("disk on fire")
        return save(job, result)

    def value(name: str, **labels: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, labels or None) or 0.0

    before = {
        "blocked": value("imagine_jobs_finished_total", status="blocked"),
        "failed": value("imagine_jobs_finished_total", status="failed"),
        "errors": value("imagine_worker_errors_total", kind="error"),
        "images": value("imagine_images_made_total"),
    }
    store = await Store.open(settings.db_path)
    worker = Worker(store, tiny_engine, settings, postprocess=postprocess)
    try:
        await worker.start()
        for i, prompt in enumerate(["blockme", "crashme", "a fox"]):
            request = GenerationRequest(prompt, seed=i, count=1, steps=2)
            await worker.submit(request, user_id=100 + i)
        await worker.join()
    finally:
        await worker.stop()
        await store.close()
    assert value("imagine_jobs_finished_total", status="blocked") == before["blocked"] + 1
    assert value("imagine_jobs_finished_total", status="failed") == before["failed"] + 1
    assert value("imagine_worker_errors_total", kind="error") == before["errors"] + 1
    assert value("imagine_images_made_total") == before["images"] + 1


async def test_job_energy_histogram_counts_measured_jobs_only(tmp_path, tiny_engine, tiny_settings):
    from core.store import Store
    from generation.request import GenerationRequest
    from generation.worker import Worker

    def count() -> float:
        return metrics.REGISTRY.get_sample_value("imagine_job_energy_joules_count") or 0.0

    def total() -> float:
        return metrics.REGISTRY.get_sample_value("imagine_job_energy_joules_sum") or 0.0

    settings = tiny_settings.model_copy(update={"data_dir": tmp_path})
    store = await Store.open(settings.db_path)
    try:
        for counter in (None, iter([0, 7_500])):  # no counter, then 7.5 J in the batch
            before_count, before_total = count(), total()
            worker = Worker(store, tiny_engine, settings)
            if counter is not None:
                worker.energy = metrics.GpuEnergy(counter_mj=lambda c=counter: next(c))
            await worker.start()
            await worker.submit(GenerationRequest("a fox", seed=1, count=1, steps=2), user_id=1)
            await worker.join()
            await worker.stop()
            if counter is None:
                assert count() == before_count  # "not measured" is never a zero
            else:
                assert count() == before_count + 1
                assert total() == pytest.approx(before_total + 7.5)
    finally:
        await store.close()


def test_energy_shares_follow_cost_and_none_stays_none():
    assert metrics.BatchEnergy(None).shares([1.0, 3.0]) == [None, None]
    assert metrics.BatchEnergy(12.0).shares([1.0, 3.0]) == [3.0, 9.0]
    assert metrics.format_energy(None) == "not measured"
    assert metrics.format_energy(9.0) == "9.0 J"
    assert metrics.format_energy(7200.0) == "2.00 Wh"
