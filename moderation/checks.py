"""Doctor checks for moderation's models: the keyed watermark and the NudeNet NSFW detector.

They explain what is wrong and how to fix it (``bot/doctor.py`` shows them); the start-up gate
that refuses to run without them is ``moderation/readiness.py``. Unlike start-up, the doctor
never creates the watermark key.
"""

from __future__ import annotations

from pathlib import Path

from core.checks import Check
from core.errors import UserInputError, first_line


def check_watermark(keys_dir: Path | None = None) -> Check:
    """The keyed watermark reads back what it writes, and the instance key is sound (0600)."""
    try:
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
    if not watermark.self_test(key):
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
        import numpy as np

        from moderation import onnx_runtime
        from moderation.nsfw import wheel_model_path

        path = Path(model_path) if model_path else wheel_model_path()
    except ImportError as exc:
        return Check(
            "nsfw model",
            "fail",
            f"NudeNet cannot be imported ({exc})",
            "reinstall imagine-bot's dependencies: pip install 'nudenet>=3.4,<4'",
        )
    try:
        session = onnx_runtime.session(path)
        name = session.get_inputs()[0].name
        session.run(None, {name: np.zeros((1, 3, 320, 320), dtype=np.float32)})
    except Exception as exc:
        return Check(
            "nsfw model",
            "fail",
            f"the NudeNet NSFW model does not load: {first_line(exc)}",
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
