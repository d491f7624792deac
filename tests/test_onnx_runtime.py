"""The moderation models' ONNX sessions leave CPU to the worker (no spinning, half the cores)."""

from __future__ import annotations

import pytest

from moderation import onnx_runtime
from moderation.nsfw import NsfwDetector


def _shares_the_cpu(session) -> bool:
    opts = session.get_session_options()
    return (
        opts.intra_op_num_threads == onnx_runtime.session_threads()
        and opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    )


def test_nudenet_session_shares_the_cpu():
    assert _shares_the_cpu(NsfwDetector.get()._detector.onnx_session)


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 1), (4, 2), (16, 4), (64, 4)])
def test_threads_are_half_the_cores_at_most_four(monkeypatch, cores, threads):
    monkeypatch.setattr(onnx_runtime, "cores", lambda: cores)
    assert onnx_runtime.session_threads() == threads


@pytest.mark.parametrize(
    ("available", "chosen"),
    [
        (["AzureExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"]),
        (
            ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
        ),
        ([], ["CPUExecutionProvider"]),
    ],
)
def test_cuda_first_with_the_cpu_as_fallback(available, chosen):
    assert onnx_runtime.choose_providers(available) == chosen


def test_without_cuda_here_nudenet_runs_on_the_cpu():
    # This machine's onnxruntime has no CUDA provider: the session says CPU, and so does the
    # detector (what doctor reports).
    assert onnx_runtime.CUDA not in onnx_runtime.available_providers()
    assert onnx_runtime.choose_providers() == [onnx_runtime.CPU]
    assert NsfwDetector.get().provider == onnx_runtime.CPU
