"""``imagine-bot doctor`` and the start-up ``preflight``: say what stops the bot, and how to fix it.

Why this exists: the people running the bot are server admins, not Python developers. A traceback
from deep inside torch or discord.py tells them nothing; "the token file is empty: put the bot
token from the Developer Portal in secrets/discord_token.txt" does. Every check returns a status
(ok / warn / fail), a plain message and the fix. ``fail`` means the bot cannot run.

``preflight(settings)`` is the fast subset that ``imagine-bot run`` calls before connecting
(token, data directory, disk, model): it raises one ``UserInputError`` listing every blocking
problem, so the CLI prints it and exits non-zero without a traceback.

This module imports no discord code: it must work when the bot itself cannot.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import shutil
import sqlite3
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from generation.config import Settings, load_settings
from generation.errors import UserInputError
from generation.store import SCHEMA_VERSION, SQLITE_MAGIC, Store

Status = Literal["ok", "warn", "fail"]

MIN_PYTHON = (3, 10)
LOW_GPU_MEMORY_GIB = 4.0
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
PORTAL_FIX = (
    "copy the token from https://discord.com/developers/applications -> your application -> "
    "Bot -> Reset Token into DISCORD_TOKEN or the token file (IMAGINE_DISCORD__TOKEN_FILE; "
    "with compose: secrets/discord_token.txt)"
)
# Same as generation.tiny.TINY_NAME; not imported because that module pulls in diffusers.
TINY_NAME = "tiny"


@dataclass
class Check:
    """One line of the doctor's report."""

    name: str
    status: Status
    message: str
    fix: str = ""


# --- individual checks ----------------------------------------------------------------------


def check_python(version: tuple[int, ...] = tuple(sys.version_info[:3])) -> Check:
    shown = ".".join(str(v) for v in version)
    if tuple(version[:2]) < MIN_PYTHON:
        return Check(
            "python",
            "fail",
            f"Python {shown} is too old; imagine-bot needs {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer",
            "install Python 3.11 (or use the Docker image) and reinstall imagine-bot in it",
        )
    return Check("python", "ok", f"Python {shown}")


def check_torch(settings: Settings) -> Check:
    """Which device generation will run on, and how much memory it has."""
    try:
        import torch
    except ImportError as exc:
        return Check(
            "torch",
            "fail",
            f"torch cannot be imported ({exc})",
            "install torch first: pip install torch (CUDA build: see https://pytorch.org/get-started/)",
        )
    wanted = settings.model.device
    build = f"torch {torch.__version__}"
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        name = torch.cuda.get_device_name(index)
        free, total = torch.cuda.mem_get_info(index)
        gib = 1024**3
        message = (
            f"{build} (CUDA {torch.version.cuda}) on {name}: "
            f"{total / gib:.1f} GiB memory, {free / gib:.1f} GiB free"
        )
        if wanted in ("cpu", "mps"):
            return Check(
                "torch",
                "warn",
                f"{message}, but model.device is {wanted!r}",
                "set model.device to auto (or cuda) to use the GPU",
            )
        if total / gib < LOW_GPU_MEMORY_GIB:
            return Check(
                "torch",
                "warn",
                f"{message}; under {LOW_GPU_MEMORY_GIB:.0f} GiB most models will run out of memory",
                "use a small model (e.g. stabilityai/sd-turbo) and keep model.max_batch at 1",
            )
        return Check("torch", "ok", message)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        if wanted == "cuda":
            return Check(
                "torch",
                "fail",
                f"{build}: model.device is 'cuda' but this machine has an Apple GPU (MPS)",
                "set model.device to auto or mps",
            )
        return Check("torch", "ok", f"{build} on the Apple GPU (MPS)")
    why = (
        f"this torch ({torch.__version__}) is a CPU-only build"
        if torch.version.cuda is None
        else f"torch was built for CUDA {torch.version.cuda} but no usable NVIDIA GPU was found"
    )
    fix = (
        "install the CUDA build of torch (pip install torch --index-url "
        "https://download.pytorch.org/whl/cu128), check that nvidia-smi works, and in Docker "
        "run with --gpus all (compose.yaml reserves the GPU)"
    )
    if wanted in ("cuda", "mps"):
        return Check("torch", "fail", f"model.device is {wanted!r} but {why}", fix)
    return Check(
        "torch",
        "warn",
        f"{why}: images are generated on the CPU, which takes minutes per image",
        fix,
    )


def check_model(
    settings: Settings,
    *,
    online: bool = True,
    endpoint: str | None = None,
    strict: bool = False,
) -> Check:
    """Is ``model.name`` on disk, in the Hugging Face cache, or at least on the hub?

    ``strict`` (start-up): a model that is neither cached nor reachable is a failure, because
    loading it would fail a moment later. For doctor it is a warning: the box may simply be
    offline right now.
    """
    name = settings.model.name
    if name == TINY_NAME:
        return Check(
            "model",
            "warn",
            "model.name is 'tiny', a random test model: it draws noise, not pictures",
            "set model.name to a real model, e.g. stabilityai/sd-turbo",
        )
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix not in SINGLE_FILE_SUFFIXES:
            return Check(
                "model",
                "fail",
                f"model file {path} is not a .safetensors or .ckpt checkpoint",
                "point model.name at a .safetensors/.ckpt file, a diffusers folder or a hub id",
            )
        return Check("model", "ok", f"single-file checkpoint {path}")
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            return Check(
                "model",
                "fail",
                f"model folder {path} has no model_index.json, so it is not a diffusers model",
                "point model.name at the folder that holds model_index.json "
                "(from pipe.save_pretrained or a hub download)",
            )
        return Check("model", "ok", f"diffusers folder {path}")
    if name.endswith(SINGLE_FILE_SUFFIXES) or name.startswith((".", "/", "~")):
        return Check(
            "model",
            "fail",
            f"model {name} does not exist on this machine",
            "fix the path in model.name (in Docker, put models in the /models volume), "
            "or use a Hugging Face hub id such as stabilityai/sd-turbo",
        )
    return _check_hub_model(settings, online=online, endpoint=endpoint, strict=strict)


def _check_hub_model(
    settings: Settings, *, online: bool, endpoint: str | None, strict: bool
) -> Check:
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        RepositoryNotFoundError,
    )

    name = settings.model.name
    cache_dir = settings.model.cache_dir
    try:
        cached = huggingface_hub.try_to_load_from_cache(
            name, "model_index.json", cache_dir=cache_dir
        )
    except HFValidationError:
        return Check(
            "model",
            "fail",
            f"model.name {name!r} is neither a file, a folder, nor a valid hub id (owner/name)",
            "use a hub id like stabilityai/sd-turbo, a local diffusers folder or a checkpoint file",
        )
    if isinstance(cached, str):
        return Check("model", "ok", f"{name} is in the Hugging Face cache ({Path(cached).parent})")
    where = cache_dir or constants.HF_HUB_CACHE
    unreachable_status: Status = "fail" if strict else "warn"
    if constants.HF_HUB_OFFLINE or not online:
        return Check(
            "model",
            unreachable_status,
            f"{name} is not in the model cache ({where}) and the hub is not being asked "
            "(offline mode), so the bot cannot load it",
            "download it once with network access (imagine-bot downloads on first start), "
            "or point model.name at a local folder",
        )
    try:
        info = huggingface_hub.HfApi(endpoint=endpoint).model_info(
            name, timeout=settings.ops.hub_timeout_s
        )
    except GatedRepoError:
        return Check(
            "model",
            "fail",
            f"{name} is gated on the Hugging Face hub: you must accept its licence first",
            "accept the licence on the model's hub page, then set HF_TOKEN to a read token",
        )
    except RepositoryNotFoundError:
        return _model_not_on_hub(name)
    except HfHubHTTPError as exc:
        status = getattr(exc.response, "status_code", None)
        if status == 404:
            return _model_not_on_hub(name)
        return _hub_unreachable(name, where, f"the hub answered HTTP {status}", unreachable_status)
    except Exception as exc:  # network down, DNS, timeout: the library raises several kinds
        return _hub_unreachable(name, where, type(exc).__name__, unreachable_status)
    files = {s.rfilename for s in (info.siblings or [])}
    if files and "model_index.json" not in files:
        return Check(
            "model",
            "fail",
            f"{name} exists on the hub but is not a diffusers pipeline (no model_index.json)",
            "pick a diffusers model, or download its .safetensors file and set model.name to the path",
        )
    return Check(
        "model",
        "ok",
        f"{name} is on the hub but not downloaded yet; the first start downloads it into {where}",
    )


def _model_not_on_hub(name: str) -> Check:
    return Check(
        "model",
        "fail",
        f"there is no model named {name} on the Hugging Face hub (or it is private)",
        "check the spelling of model.name (owner/name), or set HF_TOKEN for a private model",
    )


def _hub_unreachable(name: str, where: object, why: str, status: Status) -> Check:
    return Check(
        "model",
        status,
        f"{name} is not in the model cache ({where}) and the Hugging Face hub cannot be "
        f"reached ({why})",
        "connect this machine to the internet for the first start, or copy the model into "
        "the cache / a local folder and point model.name at it",
    )


def check_compile(settings: Settings) -> Check | None:
    """``model.compile`` needs what Triton builds its launchers with: a C compiler and Python's
    headers. Without them the first image fails deep inside torch; refuse here instead."""
    if not settings.model.compile:
        return None
    import sysconfig

    compiler = os.environ.get("CC") or next(
        (c for c in ("cc", "gcc", "clang") if shutil.which(c)), None
    )
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    missing = [
        what
        for what, ok in (
            ("a C compiler", compiler),
            (f"Python's headers ({headers})", headers.is_file()),
        )
        if not ok
    ]
    if missing:
        return Check(
            "compile",
            "fail",
            f"model.compile is on but this machine lacks {' and '.join(missing)}, which "
            "torch.compile (Triton) needs",
            "set model.compile=false, or install gcc and the Python headers (Debian/Ubuntu: "
            "apt-get install gcc libc6-dev python3-dev; Docker: build with "
            "--build-arg COMPILE_TOOLS=true)",
        )
    return Check("compile", "ok", f"torch.compile can build its kernels ({compiler})")


def check_database(settings: Settings) -> Check:
    """Does the SQLite file open, is it intact, and is it at the schema this version expects?

    Read-only: the doctor never migrates or creates the database.
    """
    path = settings.db_path
    if not path.exists():
        return Check(
            "database",
            "ok",
            f"no database yet at {path}; it is created on the first start",
        )
    if path.is_dir():
        return Check(
            "database",
            "fail",
            f"database path {path} is a folder",
            "move that folder away, or point data_dir somewhere else",
        )
    corrupt_fix = (
        f"stop the bot, move {path} aside (keep it for recovery) and restore a backup, "
        "or start fresh (a new database is created on start)"
    )
    with path.open("rb") as fh:
        header = fh.read(len(SQLITE_MAGIC))
    if header and header != SQLITE_MAGIC:
        return Check(
            "database", "fail", f"{path} is not an SQLite database (corrupt?)", corrupt_fix
        )
    try:
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            integrity = db.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.Error as exc:
        return Check("database", "fail", f"{path} cannot be read: {exc}", corrupt_fix)
    if integrity != "ok":
        return Check("database", "fail", f"{path} is damaged: {integrity}", corrupt_fix)
    if version > SCHEMA_VERSION:
        return Check(
            "database",
            "fail",
            f"{path} has schema version {version}, newer than this imagine-bot understands "
            f"({SCHEMA_VERSION}); it was written by a newer release",
            "upgrade imagine-bot (or restore the backup made before the upgrade)",
        )
    if version < SCHEMA_VERSION:
        return Check(
            "database",
            "warn",
            f"{path} is at schema version {version}; it is upgraded to {SCHEMA_VERSION} "
            "on the next start",
            f"back up {path} before starting the new version",
        )
    try:
        asyncio.run(_open_and_close(path))
    except UserInputError as exc:
        return Check("database", "fail", str(exc), corrupt_fix)
    return Check("database", "ok", f"{path} opens, schema version {version} (current)")


async def _open_and_close(path: Path) -> None:
    store = await Store.open(path, create=False)
    await store.close()


def check_data_dir(settings: Settings, *, create: bool = False) -> Check:
    """Can the bot write its database, images and keys? Tested by writing, not by mode bits.

    Mode bits lie (root ignores them; read-only mounts and Docker volumes owned by another uid
    do not show in them), so the check creates and removes a small file.
    """
    path = settings.data_dir
    if path.exists() and not path.is_dir():
        return Check(
            "data dir",
            "fail",
            f"data_dir {path} is a file, not a folder",
            "point data_dir (IMAGINE_DATA_DIR) at a folder",
        )
    probe = path
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return _not_writable(path, exc)
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        return Check(
            "data dir",
            "fail",
            f"data_dir {path} cannot be created: {probe} is a file",
            "point data_dir (IMAGINE_DATA_DIR) at a folder",
        )
    for folder in [probe] + [d for d in (settings.images_dir, settings.keys_dir) if d.is_dir()]:
        try:
            fd, name = tempfile.mkstemp(prefix=".imagine-write-test-", dir=folder)
            os.close(fd)
            os.unlink(name)
        except OSError as exc:
            return _not_writable(folder, exc)
    note = "" if path.exists() else f" (created on first start; {probe} is writable)"
    return Check("data dir", "ok", f"data folder {path} is writable{note}")


def _not_writable(folder: Path, exc: OSError) -> Check:
    return Check(
        "data dir",
        "fail",
        f"cannot write in {folder}: {exc.strerror or exc}",
        "make the folder writable for the user running the bot (in Docker: uid 10001, "
        "e.g. chown -R 10001 on the host folder), or point data_dir at a writable folder; "
        "a read-only mount cannot hold the database",
    )


def check_disk(settings: Settings) -> Check:
    path = settings.data_dir
    while not path.exists():
        path = path.parent
    free_mb = shutil.disk_usage(path).free / 1024**2
    need = settings.ops.min_free_disk_mb
    if free_mb < need:
        return Check(
            "disk",
            "fail",
            f"only {free_mb:.0f} MB free where data_dir lives ({path}); the bot needs at "
            f"least {need} MB (ops.min_free_disk_mb) for images and the database",
            "free disk space (old images are in data_dir/images), or move data_dir to a "
            "bigger disk",
        )
    return Check("disk", "ok", f"{free_mb / 1024:.1f} GB free for data_dir ({path})")


def check_token(settings: Settings) -> Check:
    """Is a token configured and shaped like a bot token? The token itself is never shown."""
    try:
        token = settings.discord_token()
    except UserInputError as exc:
        return Check(
            "token",
            "fail",
            str(exc),
            "make the token file readable by the bot (in Docker: the discord_token secret)",
        )
    if not token:
        return Check(
            "token",
            "fail",
            "no Discord bot token is set",
            PORTAL_FIX,
        )
    problem, bot_id = token_problem(token)
    if problem:
        return Check("token", "fail", f"the Discord token {problem}", PORTAL_FIX)
    return Check("token", "ok", f"a bot token is set (for bot user id {bot_id}; not shown)")


_TOKEN_PART = re.compile(r"[A-Za-z0-9_-]+")


def token_problem(token: str) -> tuple[str | None, str | None]:
    """``(problem, bot user id)``: what is wrong with the token's shape, without showing it.

    Bot tokens are three base64url parts joined by dots; the first encodes the bot's user id.
    The usual mistakes are pasting the client secret, the public key or the application id,
    adding a ``Bot `` prefix, or keeping the quotes.
    """
    if token[:1] in "\"'" or token[-1:] in "\"'":
        return "is wrapped in quotes; remove them", None
    if token.lower().startswith(("bot ", "bearer ")):
        return "starts with 'Bot '; give the token alone, without the prefix", None
    if token.isdigit():
        return "is all digits: that is the application or user id, not the token", None
    if re.fullmatch(r"[0-9a-f]{64}", token):
        return "looks like the application's public key, not the bot token", None
    parts = token.split(".")
    if len(parts) != 3 or not all(_TOKEN_PART.fullmatch(p) for p in parts):
        hint = " (it looks like the OAuth2 client secret)" if len(token) == 32 else ""
        return f"is not shaped like a bot token (three parts separated by dots){hint}", None
    try:
        bot_id = base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        bot_id = ""
    if not bot_id.isdigit():
        return "is not a bot token: its first part does not encode a user id", None
    return None, bot_id


def check_watermark(keys_dir: Path | None = None) -> Check:
    """The keyed watermark reads back what it writes, and the instance key is sound (0600)."""
    try:
        from PIL import Image

        from moderation import watermark
        from moderation.watermark_key import KEY_FILE, WatermarkKey, load_or_create_key
    except ImportError as exc:
        return Check(
            "watermark",
            "fail",
            f"the watermark libraries cannot be imported ({exc})",
            "reinstall imagine-bot's dependencies: pip install opencv-python-headless scipy",
        )
    note = "the key is created on first start"
    key = WatermarkKey.generate()
    if keys_dir is not None and (Path(keys_dir) / KEY_FILE).is_file():
        try:
            key = load_or_create_key(Path(keys_dir))  # also narrows its mode to 0600
        except UserInputError as exc:
            return Check("watermark", "fail", str(exc), "restore the key file from a backup")
        note = f"key {key.fingerprint} in {Path(keys_dir) / KEY_FILE}, mode 0600"
    ramp = Image.linear_gradient("L").resize((256, 256)).convert("RGB")
    payload = watermark.payload_for(1, 0)
    if watermark.detect(watermark.embed(ramp, payload, key), key).payload != payload:
        return Check(
            "watermark",
            "fail",
            "the watermark does not read back what it wrote",
            "reinstall imagine-bot's dependencies (numpy, scipy, opencv-python-headless)",
        )
    return Check("watermark", "ok", f"keyed watermark embeds and reads back; {note}")


def check_nudenet(model_path: Path | None = None, *, gpu: bool | None = None) -> Check:
    """NudeNet loads and runs, and on which provider: an admin with a GPU wants it there.

    ``gpu``: whether torch sees a CUDA device (asked when None)."""
    try:
        import nudenet
        import numpy as np

        from moderation import onnx_runtime
    except ImportError as exc:
        return Check(
            "nsfw model",
            "fail",
            f"NudeNet cannot be imported ({exc})",
            "reinstall imagine-bot's dependencies: pip install 'nudenet>=3.4,<4'",
        )
    path = Path(model_path) if model_path else Path(nudenet.__file__).parent / "320n.onnx"
    try:
        session = onnx_runtime.session(path)
        name = session.get_inputs()[0].name
        session.run(None, {name: np.zeros((1, 3, 320, 320), dtype=np.float32)})
    except Exception as exc:
        return Check(
            "nsfw model",
            "fail",
            f"the NudeNet NSFW model does not load: {_first_line(exc)}",
            "reinstall it: pip install --force-reinstall --no-deps 'nudenet>=3.4,<4'",
        )
    provider = onnx_runtime.provider_of(session)
    where = f"runs on the {onnx_runtime.describe(provider)} ({provider})"
    if gpu is None:
        gpu = _cuda_available()
    if gpu and provider != onnx_runtime.CUDA:
        offered = onnx_runtime.CUDA in onnx_runtime.available_providers()
        return Check(
            "nsfw model",
            "warn",
            f"NudeNet NSFW detector loads but {where} although a CUDA GPU is present"
            + ("; onnxruntime-gpu could not load CUDA/cuDNN" if offered else ""),
            (
                "make torch's CUDA libraries loadable (onnxruntime-gpu >= 1.21 with torch's "
                "nvidia-* wheels) or match onnxruntime-gpu to the CUDA major version"
                if offered
                else "install the GPU build alone (both write one module): pip uninstall -y "
                "onnxruntime onnxruntime-gpu && pip install --no-deps 'onnxruntime-gpu>=1.20'"
            ),
        )
    return Check("nsfw model", "ok", f"NudeNet NSFW detector loads; {where}")


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - no torch, no GPU to speak of
        return False


def in_container() -> bool:
    """Docker and Podman leave these marker files in every container."""
    return Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()


def check_metrics(settings: Settings, *, container: bool | None = None) -> Check:
    """Metrics and /healthz say how busy the bot is and who is queued: keep them local."""
    ops = settings.ops
    if not ops.metrics_enabled:
        return Check("metrics", "ok", "metrics endpoint off (ops.metrics_enabled=false)")
    where = f"http://{ops.metrics_host}:{ops.metrics_port}/metrics and /healthz"
    if _is_loopback(ops.metrics_host):
        return Check("metrics", "ok", f"serving {where} (this machine only)")
    if container if container is not None else in_container():
        return Check(
            "metrics",
            "ok",
            f"serving {where} inside a container; publish the port on 127.0.0.1 only "
            "(compose.yaml does)",
        )
    return Check(
        "metrics",
        "warn",
        f"serving {where}: other machines can read the queue and health",
        "set ops.metrics_host to 127.0.0.1 (scrape from this machine), or firewall the port",
    )


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


# --- running them ---------------------------------------------------------------------------


def run_checks(settings: Settings, *, online: bool = True, quick: bool = False) -> list[Check]:
    """All doctor checks in the order an admin would fix them."""
    checks = [
        check_python(),
        check_token(settings),
        check_data_dir(settings),
        check_disk(settings),
        check_database(settings),
        check_torch(settings),
        check_model(settings, online=online),
        check_metrics(settings),
        check_compile(settings),
    ]
    checks = [c for c in checks if c is not None]
    if not quick:
        checks += [
            check_watermark(settings.keys_dir),
            check_nudenet(settings.moderation.nsfw_model),
        ]
    return checks


def preflight(settings: Settings) -> None:
    """Start-up checks for ``imagine-bot run``: raise one clear error listing what blocks it.

    Creates the data directory (the bot would anyway) and asks the hub only when the model is
    not cached. Slow checks (loading ONNX models, integrity scans) are left to ``doctor``.
    """
    checks = [
        check_token(settings),
        check_data_dir(settings, create=True),
        check_disk(settings),
        check_model(settings, strict=True),
        check_compile(settings),
    ]
    failures = [c for c in checks if c is not None and c.status == "fail"]
    if failures:
        lines = [f"- {c.message}\n  fix: {c.fix}" for c in failures]
        raise UserInputError(
            "cannot start:\n" + "\n".join(lines) + "\n(run `imagine-bot doctor` for a full check)"
        )


def format_report(checks: list[Check]) -> str:
    label = {"ok": " ok ", "warn": "warn", "fail": "FAIL"}
    width = max(len(c.name) for c in checks)
    out = []
    for c in checks:
        out.append(f"[{label[c.status]}] {c.name:<{width}}  {c.message}")
        if c.fix and c.status != "ok":
            out.append(f"       {'':<{width}}  fix: {c.fix}")
    fails = sum(c.status == "fail" for c in checks)
    warns = sum(c.status == "warn" for c in checks)
    out.append("")
    if fails:
        out.append(f"{fails} problem(s) stop the bot from running; fix them and run doctor again.")
    elif warns:
        out.append(f"The bot can run; {warns} warning(s) above are worth a look.")
    else:
        out.append("All good: the bot can run.")
    return "\n".join(out)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        help="check this machine's set-up and explain each problem",
        description="Check Python, torch/GPU, the model, the database, the data folder, the "
        "token and the moderation models; exit 1 when something stops the bot from running.",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--offline", action="store_true", help="do not ask the Hugging Face hub")
    p.add_argument(
        "--quick", action="store_true", help="skip loading the watermark and NSFW models"
    )
    p.set_defaults(handler=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    checks = run_checks(settings, online=not args.offline, quick=args.quick)
    ok = not any(c.status == "fail" for c in checks)
    if args.json:
        print(json.dumps({"ok": ok, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        print(format_report(checks))
    return 0 if ok else 1
