"""Prometheus metrics and the ``/healthz`` endpoint: what an admin graphs and what Docker polls.

Why a dedicated ``CollectorRegistry``: the default one is process-global and also collects
whatever other libraries register, so tests and a second bot in the same process would collide.
Everything here is exported from ``REGISTRY`` only.

Other modules update the metric objects directly (``metrics.IMAGES_MADE.inc(4)``) or through the
helpers below; the worker and the bot keep ``health`` up to date. The HTTP server is off by
default (``ops.metrics_enabled``) and binds to ``ops.metrics_host`` (127.0.0.1) so nothing is
exposed beyond the machine unless the admin asks for it.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

from core.config import Settings

REGISTRY = CollectorRegistry(auto_describe=True)

# Waits range from "instant" to "a busy evening"; runs from a turbo model to a big upscale on CPU.
WAIT_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
RUN_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640)

QUEUE_LENGTH = Gauge(
    "imagine_queue_length",
    "Jobs waiting in the queue, per guild (guild=dm for direct messages).",
    ["guild"],
    registry=REGISTRY,
)
JOB_WAIT_SECONDS = Histogram(
    "imagine_job_wait_seconds",
    "Time from a job being queued to the worker starting it.",
    buckets=WAIT_BUCKETS,
    registry=REGISTRY,
)
JOB_RUN_SECONDS = Histogram(
    "imagine_job_run_seconds",
    "Time the worker spent on a job (generation and post-processing).",
    buckets=RUN_BUCKETS,
    registry=REGISTRY,
)
JOBS_FINISHED = Counter(
    "imagine_jobs_finished",
    "Jobs that reached a final status.",
    ["status"],
    registry=REGISTRY,
)
IMAGES_MADE = Counter(
    "imagine_images_made",
    "Images generated and delivered to post-processing.",
    registry=REGISTRY,
)
MODERATION_BLOCKS = Counter(
    "imagine_moderation_blocks",
    "Requests or images refused by moderation, by stage (prompt/image) and category.",
    ["stage", "category"],
    registry=REGISTRY,
)
GPU_BUSY_SECONDS = Counter(
    "imagine_gpu_busy_seconds",
    "Seconds the device spent generating; rate() of this is the busy fraction.",
    registry=REGISTRY,
)
GPU_BUSY_FRACTION = Gauge(
    "imagine_gpu_busy_fraction",
    "Fraction of the last minute the device spent generating (0-1).",
    registry=REGISTRY,
)
WORKER_ERRORS = Counter(
    "imagine_worker_errors",
    "Jobs the worker could not finish, by error kind (oom, error, ...).",
    ["kind"],
    registry=REGISTRY,
)
WORKER_HEARTBEAT = Gauge(
    "imagine_worker_heartbeat_timestamp_seconds",
    "Unix time of the worker's last sign of life.",
    registry=REGISTRY,
)
GATEWAY_CONNECTED = Gauge(
    "imagine_gateway_connected",
    "1 while the Discord gateway connection is up.",
    registry=REGISTRY,
)
# Memory, CPU and open files of the process (process_*), Python version (python_info).
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)


class GpuMemoryCollector:
    """CUDA memory at scrape time: what torch holds vs. what the card has, for OOM hunting.

    Reads torch only if the engine already imported it and initialised CUDA, so scraping never
    loads torch or creates a CUDA context by itself.
    """

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # values appear only on GPU machines; nothing to declare up front

    def collect(self) -> Iterator[GaugeMetricFamily]:
        torch = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return
        family = GaugeMetricFamily(
            "imagine_gpu_memory_bytes",
            "CUDA memory by kind: allocated/reserved by torch, free/total on the device.",
            labels=["device", "kind"],
        )
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            for kind, value in (
                ("allocated", torch.cuda.memory_allocated(index)),
                ("reserved", torch.cuda.memory_reserved(index)),
                ("free", free),
                ("total", total),
            ):
                family.add_metric([str(index), kind], value)
        yield family


REGISTRY.register(GpuMemoryCollector())


class BusyTracker:
    """Measures how much of a sliding window the device was busy.

    ``with tracker.busy(): ...`` wraps each generation (it may run in a worker thread). The
    fraction is computed at scrape time, so it falls back to 0 when the worker goes idle.
    """

    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._intervals: deque[tuple[float, float]] = deque()
        self._active: list[float] = []  # start times of generations in progress

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        start = self._clock()
        with self._lock:
            self._active.append(start)
        try:
            yield
        finally:
            end = self._clock()
            with self._lock:
                self._active.remove(start)
                self._intervals.append((start, end))
                self._forget_before(end - self.window_s)  # bounded even if never scraped
            GPU_BUSY_SECONDS.inc(max(0.0, end - start))

    def _forget_before(self, since: float) -> None:
        while self._intervals and self._intervals[0][1] <= since:
            self._intervals.popleft()

    def fraction(self) -> float:
        now = self._clock()
        since = now - self.window_s
        with self._lock:
            self._forget_before(since)
            spans = [*self._intervals, *((start, now) for start in self._active)]
        # Merge overlapping spans so two concurrent calls do not count the device twice.
        busy, cursor = 0.0, since
        for start, end in sorted(spans):
            start = max(start, cursor)
            if end > start:
                busy += end - start
                cursor = end
        return min(1.0, busy / self.window_s)


busy_tracker = BusyTracker()
GPU_BUSY_FRACTION.set_function(busy_tracker.fraction)


def gpu_busy() -> contextlib.AbstractContextManager[None]:
    """Wrap a generation call: ``with metrics.gpu_busy(): engine.generate(...)``."""
    return busy_tracker.busy()


GPU_ENERGY_JOULES = Counter(
    "imagine_gpu_energy_joules",
    "Energy the GPU drew while generating (NVML's counter, read around each batch).",
    registry=REGISTRY,
)


JOB_ENERGY_JOULES = Histogram(
    "imagine_job_energy_joules",
    "GPU energy charged to each finished job (its share of its batch by cost); jobs on a GPU "
    "without an energy counter are not observed.",
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
    registry=REGISTRY,
)


@dataclass
class BatchEnergy:
    """What one GPU batch drew: joules, or None where no counter exists ("not measured")."""

    joules: float | None = None

    def shares(self, costs: list[float]) -> list[float | None]:
        """The batch's energy split across its jobs in proportion to their cost."""
        if self.joules is None:
            return [None] * len(costs)
        total = sum(costs)
        if total <= 0:
            return [self.joules / len(costs)] * len(costs) if costs else []
        return [self.joules * cost / total for cost in costs]


def format_energy(joules: float | None) -> str:
    """A job's energy for people: joules below one watt-hour, else watt-hours."""
    if joules is None:
        return "not measured"
    if joules < 100:
        return f"{joules:.1f} J"
    if joules < 3600:
        return f"{joules:.0f} J"
    return f"{joules / 3600:.2f} Wh"


def energy_text(joules: float | None) -> str:
    """A job's energy with where it comes from, for /show and provenance."""
    if joules is None:
        return "not measured (no GPU energy counter)"
    return f"{format_energy(joules)} (its share by cost of its GPU batch, from the GPU's counter)"


class GpuEnergy:
    """Energy per image from the GPU's own counter (NVML), counted only while generating.

    Why around each batch and not since start: the counter covers the whole card, so idle
    time (and other processes' work between our batches) would otherwise be charged to our
    images. Why by UUID: under ``CUDA_VISIBLE_DEVICES`` CUDA's device 0 need not be NVML's
    device 0 (NVML ignores that variable and numbers every card in the machine).
    Needs the optional ``nvidia-ml-py`` (extra ``gpu``); without it, or without an NVIDIA GPU
    or a card that reports energy (pre-Volta), every figure is None: "not measured".
    """

    def __init__(self, counter_mj: Callable[[], int | None] | None = None) -> None:
        """``counter_mj``: read the counter some other way (tests; NVML otherwise)."""
        self._lock = threading.Lock()
        self._handle: Any = None
        self._nvml: Any = None
        self._tried = False
        self._counter_mj = counter_mj
        self.joules = 0.0
        self.images = 0

    def _device(self) -> Any:
        if self._tried:
            return self._handle
        self._tried = True
        try:
            import pynvml  # nvidia-ml-py; optional

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = nvml_handle_for_cuda_device(pynvml)
            if self._handle is not None:
                pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)  # supported?
        except Exception:  # noqa: BLE001 - not installed, no NVIDIA GPU, or no energy counter
            self._handle = None
        return self._handle

    def read_mj(self) -> int | None:
        """The counter now, in millijoules, or None where there is none."""
        if self._counter_mj is not None:
            return self._counter_mj()
        handle = self._device()
        if handle is None:
            return None
        try:
            return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        except Exception:  # noqa: BLE001 - the driver went away; say "not measured"
            return None

    @contextlib.contextmanager
    def batch(self, images: Callable[[], int]) -> Iterator[BatchEnergy]:
        """Wrap one GPU batch; ``images()`` (asked at the end) says how many it made.

        The yielded ``BatchEnergy`` holds the batch's joules once the block ends (None: not
        measured), for the worker to share among the batch's jobs."""
        measured = BatchEnergy()
        start = self.read_mj()
        try:
            yield measured
        finally:
            end = self.read_mj()
            made = images()
            if start is not None and end is not None and end >= start:
                joules = (end - start) / 1000
                measured.joules = joules
                GPU_ENERGY_JOULES.inc(joules)
                with self._lock:
                    self.joules += joules
                    self.images += made

    def wh_per_image(self) -> float | None:
        with self._lock:
            return self.joules / 3600 / self.images if self.images else None


def nvml_handle_for_cuda_device(pynvml: Any, cuda_index: int | None = None) -> Any:
    """NVML's handle of the card torch calls ``cuda_index`` (default: the current device).

    Matched by UUID (what ``CUDA_VISIBLE_DEVICES`` may name), then by PCI bus id; None when
    torch has no CUDA device or nothing matches (better "not measured" than another card).
    """
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    index = torch.cuda.current_device() if cuda_index is None else cuda_index
    props = torch.cuda.get_device_properties(index)
    uuid = str(getattr(props, "uuid", "") or "").lower().removeprefix("gpu-")
    bus = _pci_bus(
        f"{props.pci_domain_id:04x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}"
        if hasattr(props, "pci_bus_id")
        else ""
    )
    for i in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(i)
        theirs = _text(pynvml.nvmlDeviceGetUUID(handle)).lower().removeprefix("gpu-")
        if uuid and theirs == uuid:
            return handle
        if bus and _pci_bus(_text(pynvml.nvmlDeviceGetPciInfo(handle).busId)) == bus:
            return handle
    return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pci_bus(bus_id: str) -> str:
    """``00000000:3B:00.0`` and ``0000:3b:00`` alike: domain, bus and device, lower case."""
    parts = bus_id.lower().replace(".", ":").split(":")
    if len(parts) < 3:
        return ""
    return ":".join(f"{int(p, 16):x}" for p in parts[:3])


gpu_energy = GpuEnergy()


def set_queue_lengths(lengths: dict[int | None, int]) -> None:
    """Replace the per-guild queue gauge with ``{guild_id (None = DMs): queued jobs}``."""
    QUEUE_LENGTH.clear()
    for guild, n in lengths.items():
        QUEUE_LENGTH.labels(guild=guild_label(guild)).set(n)


def guild_label(guild_id: int | None) -> str:
    return "dm" if guild_id is None else str(guild_id)


def record_moderation_block(stage: str, categories: list[str] | tuple[str, ...]) -> None:
    """Count one refusal under each category it named (or ``other`` when none)."""
    for category in categories or ("other",):
        MODERATION_BLOCKS.labels(stage=stage, category=str(category)).inc()


class Health:
    """The worker's and the gateway's state, as ``/healthz`` reports it.

    Healthy means: the gateway is connected, the worker is running, and if the worker has work
    its last heartbeat is younger than ``stale_after_s`` (an idle worker waiting for jobs is
    fine however long it waits). The worker calls ``worker_beat()`` at every step.

    The gateway counts once something reports it (``expect_gateway``/``set_gateway``; the bot
    uses ``bot.discord_metrics.watch_gateway``); until then it shows as "not reported", so a
    process without a Discord connection (or a bot that does not report it) is judged by its
    worker alone.
    """

    def __init__(
        self,
        *,
        stale_after_s: float = 120.0,
        require_gateway: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stale_after_s = stale_after_s
        self.require_gateway = require_gateway
        self._clock = clock
        self._lock = threading.Lock()
        self._has_work: Callable[[], bool] | None = None
        self.reset()

    def watch_work(self, has_work: Callable[[], bool] | None) -> None:
        """Ask ``has_work()`` (on the event loop) whether the worker has jobs, instead of
        relying on ``busy=`` flags. ``watch_worker`` sets this to the worker's queue."""
        self._has_work = has_work

    def reset(self) -> None:
        with self._lock:
            self._gateway = "not reported"
            self._worker = "not started"
            self._busy = False
            self._last_beat: float | None = None
        GATEWAY_CONNECTED.set(0)

    def expect_gateway(self) -> None:
        """From now on the gateway must be connected for the process to be healthy."""
        with self._lock:
            if self._gateway == "not reported":
                self._gateway = "not connected yet"

    def set_gateway(self, connected: bool) -> None:
        with self._lock:
            self._gateway = "connected" if connected else "disconnected"
        GATEWAY_CONNECTED.set(1 if connected else 0)

    def worker_started(self) -> None:
        with self._lock:
            self._worker = "alive"
        self.worker_beat()

    def worker_beat(self, *, busy: bool | None = None) -> None:
        """A sign of life; ``busy`` says whether the worker now has a job in hand."""
        with self._lock:
            self._last_beat = self._clock()
            if self._worker != "stopped":
                self._worker = "alive"
            if busy is not None:
                self._busy = busy
        WORKER_HEARTBEAT.set(time.time())

    def worker_stopped(self) -> None:
        with self._lock:
            self._worker = "stopped"
            self._busy = False

    def status(self) -> tuple[bool, dict[str, Any]]:
        """``(healthy, details)``; details is what ``/healthz`` returns as JSON."""
        with self._lock:
            age = None if self._last_beat is None else self._clock() - self._last_beat
            gateway, worker, busy = self._gateway, self._worker, self._busy
        if self._has_work is not None and worker == "alive":
            busy = bool(self._has_work())
        problems = []
        if self.require_gateway and gateway not in ("connected", "not reported"):
            problems.append(f"Discord gateway {gateway}")
        if worker != "alive":
            problems.append(f"worker {worker}")
        elif busy and age is not None and age > self.stale_after_s:
            worker = "stalled"
            problems.append(
                f"worker has work but no heartbeat for {age:.0f} s (limit {self.stale_after_s:.0f} s)"
            )
        details = {
            "status": "ok" if not problems else "unhealthy",
            "gateway": gateway,
            "worker": worker,
            "worker_busy": busy,
            "last_heartbeat_age_s": None if age is None else round(age, 3),
            "problems": problems,
        }
        return not problems, details


health = Health()


class _WorkerWatch:
    """Turns the worker's job events into metrics; see ``watch_worker``."""

    def __init__(self) -> None:
        self.scheduler: Any = None
        self.started_at = 0.0

    def queue_lengths(self) -> dict[int | None, int]:
        return self.scheduler.queued_by_guild()  # kept as jobs come and go: no order() pass

    def observe(self, method: str, job: Any, *rest: Any) -> None:
        if method in ("on_started", "on_progress"):
            health.worker_beat()
            if method == "on_started" and job.started_at and job.created_at:
                JOB_WAIT_SECONDS.observe(max(0.0, job.started_at - job.created_at))
            return
        if method not in ("on_done", "on_failed"):
            return
        health.worker_beat()
        if job.finished_at and job.finished_at < self.started_at:
            return  # finished before this process started: replayed for delivery, not new work
        status = getattr(job.status, "value", job.status)
        JOBS_FINISHED.labels(status=str(status)).inc()
        if job.started_at and job.finished_at:
            JOB_RUN_SECONDS.observe(max(0.0, job.finished_at - job.started_at))
        if method == "on_done":
            IMAGES_MADE.inc(len(rest[0]) if rest else 0)
            energy = getattr(job, "energy_joules", None)
            if energy is not None:
                JOB_ENERGY_JOULES.observe(energy)
        elif status == "failed":
            reason = str(rest[0]) if rest else ""
            WORKER_ERRORS.labels(kind="oom" if "out of memory" in reason else "error").inc()


_watch = _WorkerWatch()


def watch_worker(worker: Any) -> None:
    """Called by ``Worker.start()``: health follows the worker, the queue gauge its scheduler."""
    _watch.scheduler = worker.scheduler
    _watch.started_at = time.time()
    scheduler = worker.scheduler
    health.watch_work(lambda: len(scheduler) > 0 or bool(scheduler.running))
    health.worker_started()


def worker_stopped() -> None:
    """Called by ``Worker.stop()``: health turns 503 and the queue gauge stops following it."""
    _watch.scheduler = None
    health.watch_work(None)
    health.worker_stopped()


def observe_job_event(method: str, job: Any, *rest: Any) -> None:
    """Called by the worker for every listener event (``on_started``, ``on_done``, ...)."""
    try:
        _watch.observe(method, job, *rest)
    except Exception:  # metrics must never break the queue
        logging.getLogger(__name__).exception("metrics: cannot record %s", method)


def render_metrics(registry: CollectorRegistry = REGISTRY) -> bytes:
    """The Prometheus text exposition of ``registry`` (call on the event loop)."""
    if _watch.scheduler is not None and registry is REGISTRY:
        set_queue_lengths(_watch.queue_lengths())
    return generate_latest(registry)


class MetricsServer:
    """The small aiohttp app serving ``/metrics`` and ``/healthz``; start/stop from the bot's loop."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        health: Health = health,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.host = host
        self.port = port
        self.health = health
        self.registry = registry
        self._runner: web.AppRunner | None = None

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        return app

    async def start(self) -> MetricsServer:
        from core.errors import UserInputError

        runner = web.AppRunner(self.make_app(), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise UserInputError(
                f"cannot serve metrics on {self.host}:{self.port}: {exc.strerror}; "
                "choose another ops.metrics_port or set ops.metrics_enabled=false"
            ) from None
        self._runner = runner
        # Port 0 means "any free port" (tests); report the real one.
        self.port = runner.addresses[0][1]
        return self

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        body = render_metrics(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        ok, details = self.health.status()
        return web.json_response(details, status=200 if ok else 503)


async def start_metrics_server(
    settings: Settings, *, health: Health = health
) -> MetricsServer | None:
    """Start the endpoint if ``ops.metrics_enabled``; returns the server (or None when off)."""
    health.stale_after_s = settings.ops.health_stale_after_s
    if not settings.ops.metrics_enabled:
        return None
    return await MetricsServer(
        settings.ops.metrics_host, settings.ops.metrics_port, health=health
    ).start()
