"""The one configuration object of imagine-bot.

Every knob lives here so that an admin has a single table to read (README "Configuration").
Values come, highest priority first, from: keyword arguments, environment variables
(``IMAGINE_`` prefix, ``__`` between section and field, e.g. ``IMAGINE_MODEL__NAME=tiny``),
a TOML file (``IMAGINE_CONFIG=/path/imagine.toml`` or ``--config``), then the defaults below.

It lives in ``core`` (not ``bot``) because the CLI, the engine and moderation must work without
Discord. The ``discord`` section is declared here too: one object validates every section.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from core.errors import UserInputError

CONFIG_ENV = "IMAGINE_CONFIG"
# The built-in random models (generation/tiny.py builds them). Named here, away from torch, so
# that code which must run without torch (doctor) can recognise them.
TINY_NAME = "tiny"
# The same idea in SDXL's shape: two text encoders, "text_time" added conditions, three UNet
# levels, and the SDXL pipeline classes (its watermarker, VAE upcast and empty-negative rules).
TINY_SDXL_NAME = "tiny-sdxl"
TINY_NAMES = (TINY_NAME, TINY_SDXL_NAME)
# /describe's default captioner (generation/describe.py): BLIP base, ~1 GB, Apache-2.0.
DEFAULT_CAPTIONER = "Salesforce/blip-image-captioning-base"
# model.name ending in one of these is a single-file checkpoint (not a diffusers folder).
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


class ModelSettings(BaseModel):
    # Hub id, local diffusers folder, single-file .safetensors/.ckpt, or "tiny" (random, offline).
    name: str = "stabilityai/sd-turbo"
    lora: Path | None = None
    # Zoom Out / Pan / Vary (Region): a dedicated inpainting model (hub id, folder or single
    # .safetensors/.ckpt), loaded on first use; None = inpaint with the main model's weights.
    inpaint: str | None = None
    lora_scale: float = 1.0
    device: Literal["auto", "cuda", "mps", "cpu"] = "auto"
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    compile: bool = False
    channels_last: bool = True
    cache_dir: Path | None = None  # Hugging Face cache; None = HF default (HF_HOME)
    # Pixel budget per image: width*height is capped here (sizes are rounded to multiples of 8).
    max_pixels: int = 1024 * 1024
    max_side: int = 2048
    max_steps: int = 150
    max_count: int = 4
    max_prompt_chars: int = 2000
    # Defaults when a request leaves them out; None = the model family's default.
    default_steps: int | None = None
    default_guidance: float | None = None
    default_size: int | None = None  # long side in px; None = model family default
    max_batch: int = 4  # images per denoising call when co-batching
    # /blend's IP-Adapter: a hub repo or folder laid out like h94/IP-Adapter, "tiny" (random, for
    # tests) or None (off: /blend says how to enable it). generation/blend.py.
    ip_adapter: str | None = None
    ip_adapter_subfolder: str = "models"
    ip_adapter_weight: str = "ip-adapter_sd15.safetensors"
    ip_adapter_scale: float = Field(default=0.7, ge=0.0, le=2.0)  # how much the images lead
    # /describe's image captioner: a hub id, a local folder, "tiny" (random, offline, tests),
    # or "" / "off" to switch /describe off. Loaded on first use, on the worker's device.
    captioner: str = DEFAULT_CAPTIONER


def usable_cores() -> int:
    """Cores this process may run on (a container's CPU set, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def default_postprocess_threads() -> int:
    return max(2, min(16, usable_cores() // 2))


class QueueSettings(BaseModel):
    mode: Literal["fair", "fifo"] = "fair"
    max_queued_per_user: int = 5
    # Jobs of one user in flight (on the GPU or prepared next) while others wait; a user alone
    # in the queue is not held back by it. Also caps how many of their jobs share a batch.
    max_running_per_user: int = 1
    # Role name -> weight in the fair share (e.g. {"Server Booster" = 2.0}).
    role_weights: dict[str, float] = Field(default_factory=dict)
    cobatch: bool = True
    # Guild ids whose members share one plain arrival-order queue (the guild still gets its
    # fair share against other guilds).
    fifo_guilds: list[int] = Field(default_factory=list)
    # Starting guess for ETAs until jobs have been measured (then an EWMA takes over and is
    # remembered across restarts). Cost unit = megapixels x steps x images.
    seconds_per_cost_unit: float = Field(default=0.5, gt=0)
    # Jobs post-processed at once (moderation, watermark, C2PA, PNG): half the cores, at least 2,
    # at most 16; the other half runs the GPU thread, the event loop and the native threads
    # (ONNX, OpenCV) each job's step starts.
    postprocess_threads: int = Field(default_factory=default_postprocess_threads, ge=1)
    # "local": the GPU worker runs inside the bot (default, needs nothing else). "redis": the bot
    # keeps the store and the fair share and hands jobs to `imagine-bot worker` processes over
    # Redis Streams at redis_url (docs/operations.md "Several GPUs").
    backend: Literal["local", "redis"] = "local"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # A remote worker silent this long loses its jobs to another worker (XAUTOCLAIM); live
    # workers refresh their jobs three times per period, so a long job is never taken away.
    reclaim_after_s: float = Field(default=30.0, gt=0)


class ModerationSettings(BaseModel):
    nsfw_threshold: float = 0.45
    face_threshold: float = 0.5
    extra_public_figures: list[str] = Field(default_factory=list)
    # NudeNet ONNX model file; None = the 320n.onnx that NudeNet's wheel ships.
    nsfw_model: Path | None = None


class ProvenanceSettings(BaseModel):
    instance_name: str = "imagine-bot"
    c2pa: bool = True
    # Leave the prompt out of PNG metadata (privacy); per-guild policy can also switch it off.
    include_prompt: bool = True


class DiscordSettings(BaseModel):
    token: SecretStr | None = None  # or DISCORD_TOKEN, or token_file
    token_file: Path | None = None
    dev_guilds: list[int] = Field(default_factory=list)  # sync commands here instantly
    progress_interval_s: float = 1.5  # at most one progress edit per job this often
    # Buttons, remix forms and reaction shortcuts per user: at most press_limit per window.
    press_limit: int = Field(default=5, ge=1)
    press_window_s: float = Field(default=10.0, gt=0)
    # /provenance lookups per user per minute: each reads up to 7 marks, and a flood of them
    # would probe the watermark.
    lookups_per_minute: int = Field(default=10, ge=1)
    # A prompt with {a, b} groups becomes one job per combination; more than this is refused
    # (each combination costs a full job, and one message should not fill the queue).
    max_permutations: int = Field(default=10, ge=1)
    # A result Discord refuses with a 5xx, a 429 or a network error is retried this many times
    # (waits double from delivery_backoff_s), then the job records why and the user is told.
    delivery_attempts: int = Field(default=5, ge=1)
    delivery_backoff_s: float = Field(default=2.0, ge=0)
    # Overrides for tests (loopback emulator); leave unset in production.
    api_base: str | None = None
    gateway_url: str | None = None


class UploadSettings(BaseModel):
    # Images users attach (/imagine image, /provenance). Checked from the header before any
    # pixel is decoded; JPEGs are decoded straight at a reduced scale, so this bounds memory.
    max_bytes: int = Field(default=25 * 1024 * 1024, gt=0)
    max_pixels: int = Field(default=16_000_000, gt=0)
    formats: list[str] = Field(default_factory=lambda: ["PNG", "JPEG", "WEBP", "GIF", "BMP"])
    concurrent_decodes: int = Field(default=2, ge=1)


class RetentionSettings(BaseModel):
    # Days to keep files on disk; 0 = forever. Uploaded init images are only needed until the
    # job ran; results back the buttons (upscale/vary) and /show. Job rows (and provenance
    # look-ups by hash or watermark) stay. The bot sweeps every sweep_interval_s.
    uploads_days: float = Field(default=7, ge=0)
    results_days: float = Field(default=0, ge=0)
    sweep_interval_s: float = Field(default=3600, gt=0)


class OpsSettings(BaseModel):
    metrics_enabled: bool = False
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9108
    log_json: bool = False
    log_level: str = "INFO"
    log_prompts: bool = False
    # /healthz turns 503 when the worker has a job but no heartbeat for this long.
    health_stale_after_s: float = 120.0
    # Start-up refuses to run (and doctor fails) with less free space than this in data_dir.
    min_free_disk_mb: int = 1024
    # Doctor/preflight ask the Hugging Face hub whether an uncached model exists; seconds to wait.
    hub_timeout_s: float = 5.0


class Settings(BaseSettings):
    """All settings; see README "Configuration" for the table."""

    model_config = SettingsConfigDict(
        env_prefix="IMAGINE_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    data_dir: Path = Path("data")
    model: ModelSettings = Field(default_factory=ModelSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    moderation: ModerationSettings = Field(default_factory=ModerationSettings)
    provenance: ProvenanceSettings = Field(default_factory=ProvenanceSettings)
    discord: DiscordSettings = Field(default_factory=DiscordSettings)
    uploads: UploadSettings = Field(default_factory=UploadSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    ops: OpsSettings = Field(default_factory=OpsSettings)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "imagine.db"

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, env_settings]
        path = os.environ.get(CONFIG_ENV)
        if path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(path)))
        return tuple(sources)

    def discord_token(self) -> str | None:
        """The bot token from settings, DISCORD_TOKEN, or the token file; never logged."""
        if self.discord.token is not None:
            return self.discord.token.get_secret_value().strip() or None
        env = os.environ.get("DISCORD_TOKEN", "").strip()
        if env:
            return env
        if self.discord.token_file is not None:
            try:
                return self.discord.token_file.read_text().strip() or None
            except OSError as exc:
                raise UserInputError(
                    f"cannot read the token file {self.discord.token_file}: {exc.strerror}"
                ) from None
        return None


def load_settings(config_file: str | Path | None = None, **overrides: object) -> Settings:
    """Build the settings, turning file and validation problems into one clear message."""
    if config_file is not None:
        os.environ[CONFIG_ENV] = str(config_file)
    path = os.environ.get(CONFIG_ENV)
    if path and not Path(path).is_file():
        raise UserInputError(f"config file {path} does not exist (set by {CONFIG_ENV} or --config)")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise UserInputError(f"invalid configuration: {problems}") from None
    except ValueError as exc:  # e.g. malformed TOML
        raise UserInputError(f"invalid configuration file {path}: {exc}") from None
