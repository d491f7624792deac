"""The soak benchmark's short form, in CI: the bot process under a mixed load (prompts,
hostile uploads, buttons, reactions, cancels) killed with SIGKILL during it; every accepted
interaction ends with exactly one result or a message saying why not."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _soak_module():
    spec = importlib.util.spec_from_file_location("bench_soak", ROOT / "bench" / "soak.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


async def test_short_soak_loses_nothing_and_duplicates_nothing() -> None:
    soak = _soak_module().soak
    result = await soak(seconds=40, kill_every=15, rate=0.8, seed=7, drain_s=240)
    assert result["kills"] >= 1 and result["accepted"] >= 5, result
    assert result["lost"] == 0 and result["duplicated"] == 0, result
    assert result["clean_exit"], result
