"""``python -m bench.gpu --quick`` runs on a CPU, so CI proves the GPU benchmark works before a GPU run.

Its figures mean nothing here (tiny random models); what is checked is that every section ran
and the JSON holds what docs/operations.md tells the operator to read.
"""

from __future__ import annotations

import json
from pathlib import Path


def test_quick_gpu_benchmark_runs_on_cpu_and_writes_its_json(tmp_path: Path, capsys):
    from bench import gpu

    out = tmp_path / "gpu.json"
    assert gpu.main(["--quick", "--archs", "tiny", "--post", "pngs", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    tiny = result["archs"]["tiny"]
    assert result["quick"] is True
    assert set(tiny["cases"]) >= {
        "diffusers_defaults",
        "engine",
        "engine+channels_last",
        "engine+channels_last+fused_qkv",
    }
    for case in tiny["cases"].values():
        assert case["batch1"]["images_per_s"] > 0 and case["batch4"]["images"] == 2  # quick
    assert tiny["cobatching"]["gain"] > 0
    assert tiny["cobatching"]["vs_solo_pixels"]["max"] <= 1  # CPU floats: rounding at most
    assert tiny["upscale"]["to"] == 64 and tiny["upscale"]["tiles"] == 1
    worker = result["worker"]
    assert worker["all_done"] and worker["worker_jobs_per_s"] > 0
    assert set(worker["gpu_idle_gap_ms"]) == {"p50", "p99"}
    assert "JSON in" in capsys.readouterr().out
