"""Doctor checks for what generation needs: torch and its device, the model, torch.compile,
the metrics endpoint.

Each check returns a ``Check`` (``core/checks.py``): a status (ok / warn / fail), a plain message and the fix, for an
admin rather than a Python developer. ``fail`` means the bot cannot run. ``bot/doctor.py``
assembles these with the store's (``core/store_checks.py``), moderation's
(``moderation/checks.py``) and its own Discord checks.

This module imports no torch at import time (``check_torch`` reports a missing torch) and no
diffusers at all.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from core.checks import Check, Status
from core.config import SINGLE_FILE_SUFFIXES, TINY_NAME, Settings

LOW_GPU_MEMORY_GIB = 4.0


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
