"""How the moderation models (NudeNet, RivaGAN) share the CPU with the GPU worker.

They run on the worker's post-processing threads, beside generation. onnxruntime's defaults
suit a process that owns the machine: one intra-op thread per core, and pool threads that spin
(busy-wait) after every run to catch the next one sooner. Beside a worker that spinning steals the
cores the pipeline needs: on a 2-core machine where torch keeps one core, a 2-thread spinning
pool slows every generation step running at the same time. So each session gets half the cores
(at most 4: the models are small, and ``queue.postprocess_threads`` runs several at once) and no
spinning.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

MAX_THREADS = 4


def cores() -> int:
    """Cores this process may run on (a container's CPU set, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def session_threads() -> int:
    return max(1, min(MAX_THREADS, cores() // 2))


def session(model: str | Path) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU with the sharing rules above."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = session_threads()
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3  # warnings about unused initialisers are noise here
    return ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
