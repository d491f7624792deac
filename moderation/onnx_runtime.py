"""Where the moderation models (NudeNet) run, and how they share the CPU with the GPU worker.

On a GPU host the models run on the GPU (CUDA execution provider) when onnxruntime offers it:
the card makes an image in tens of milliseconds, and NudeNet on the CPU threads beside it
would be the slower half. The CPU provider stays listed after CUDA, so a node CUDA cannot run,
or a CUDA that fails to load (no cuDNN, a driver too old), falls back to the CPU instead of
failing the check. The CUDA provider exists only in ``onnxruntime-gpu`` (the ``gpu`` extra);
``onnxruntime`` and ``onnxruntime-gpu`` write the same module, so only one may be installed
(docs/operations.md says how).

On the CPU, onnxruntime's defaults suit a process that owns the machine: one intra-op thread
per core, and pool threads that spin (busy-wait) after every run to catch the next one sooner.
Beside a worker that spinning steals the cores the pipeline needs: on a 2-core machine where
torch keeps one core, a 2-thread spinning pool slows every generation step running at the same
time. So each session gets half the cores (at most 4: the models are small, and
``queue.postprocess_threads`` runs several at once) and no spinning.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from core.config import usable_cores

MAX_THREADS = 4
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def cores() -> int:
    """Cores this process may run on (a container's CPU set, not the host's count)."""
    return usable_cores()


def session_threads() -> int:
    return max(1, min(MAX_THREADS, cores() // 2))


def available_providers() -> list[str]:
    """What this onnxruntime build offers (``onnxruntime-gpu`` adds CUDA)."""
    import onnxruntime as ort

    return list(ort.get_available_providers())


def choose_providers(available: Iterable[str] | None = None) -> list[str]:
    """CUDA first where the build offers it, the CPU always last as the fallback."""
    offered = set(available_providers() if available is None else available)
    return [CUDA, CPU] if CUDA in offered else [CPU]


def session(model: str | Path, providers: list[str] | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` on the chosen providers with the sharing rules above."""
    import onnxruntime as ort

    providers = providers or choose_providers()
    if CUDA in providers and hasattr(ort, "preload_dlls"):
        # onnxruntime-gpu >= 1.21 finds CUDA/cuDNN in torch's nvidia-* wheels this way; a
        # failure here only means the session falls back to the CPU provider.
        try:
            ort.preload_dlls()
        except Exception:  # noqa: BLE001 - the fallback is the CPU, said by provider_of
            pass
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = session_threads()
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3  # warnings about unused initialisers are noise here
    return ort.InferenceSession(str(model), opts, providers=providers)


def provider_of(onnx_session: Any) -> str:
    """The provider a session really runs on (onnxruntime drops CUDA when it cannot load it)."""
    return str(onnx_session.get_providers()[0])


def describe(provider: str) -> str:
    return {CUDA: "GPU (CUDA)", CPU: "CPU"}.get(provider, provider)
